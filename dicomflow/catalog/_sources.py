"""Part 10 files from anywhere fsspec reaches: listing sources, reading header prefixes.

A source is a local path, a glob, or an fsspec URL (``s3://``, ``gs://``, ``zip://...::...``,
``http(s)://``, ``memory://``). Listing yields ``(uri, size)`` pairs in a deterministic order;
reading fetches only a prefix of each object, growing it when the header is longer.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from io import BytesIO
from typing import Any, BinaryIO

from ..dicom import ALL_VRS, NeedMore, ParsedHeader, Unsupported, parse_header, walk_to_end
from ..errors import InvalidDicomError, SourceError, SourceNotFoundError

__all__ = ["iter_sources", "read_headers"]

_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_GLOB_CHARS = re.compile(r"[*?\[]")
#: first read; headers of CT/MR objects are typically 4-16 KiB
DEFAULT_PREFIX = 64 * 1024
#: first read of a local file: one page-cache copy is cheap, so start small and grow
LOCAL_PREFIX = 16 * 1024

#: ``(uri, size, modified)``: size in bytes and modification time in microseconds since the
#: epoch (UTC), each None where listing does not tell it (local files are stat'ed on read)
FileRef = tuple[str, int | None, int | None]


def _is_url(source: str) -> bool:
    return "::" in source or (bool(_URL_RE.match(source)) and not source.startswith("file://"))


def iter_sources(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[FileRef]:
    """Yield ``(uri, size, modified)`` for every file a source names, in a deterministic order.

    Raises :class:`~dicomflow.errors.SourceError` when a source does not exist or cannot be
    listed. ``size`` and ``modified`` are None where listing does not tell them (local files
    are stat'ed on read).
    """
    if isinstance(source, (str, os.PathLike)):
        sources: Iterable[str | os.PathLike[str]] = [source]
    else:
        sources = source
    for item in sources:
        text = os.fspath(item)
        if _is_url(text):
            yield from _iter_url(text, dict(storage_options or {}))
        else:
            yield from _iter_local(text.removeprefix("file://"))


def _iter_local(path: str) -> Iterator[FileRef]:
    path = os.path.expanduser(path)
    if _GLOB_CHARS.search(path):
        matches = sorted(glob.glob(path, recursive=True))
        files = [os.path.abspath(m) for m in matches if not os.path.isdir(m)]
        if not matches:
            raise SourceNotFoundError(f"no files match {path!r}")
        for f in files:
            yield f, None, None
    elif os.path.isdir(path):
        yield from _walk_local(path)
    elif os.path.exists(path):
        yield os.path.abspath(path), None, None
    else:
        raise SourceNotFoundError(f"no such file or directory: {path!r}")


def _walk_local(path: str) -> Iterator[FileRef]:
    """Every non-hidden file under ``path``, sorted; symlinked folders followed, loops not.

    A folder reached again through a link (a loop, or a second link to one already walked) is
    skipped with a warning naming both paths, so no file is listed twice and the walk ends.
    """
    seen: dict[tuple[int, int], str] = {}
    for root, dirs, files in os.walk(path, onerror=_raise_source_error, followlinks=True):
        st = os.stat(root)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            warnings.warn(
                f"skipped {root}: a link to {seen[key]}, which is listed already",
                stacklevel=3,
            )
            dirs[:] = []
            continue
        seen[key] = root
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):  # hidden: dicomflow's own records, temp files
                yield os.path.abspath(os.path.join(root, name)), None, None


_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def _open_regular(uri: str) -> BinaryIO:
    """Open a local file for reading, refusing FIFOs, sockets and devices without blocking.

    ``O_NONBLOCK`` makes opening a FIFO return at once (a plain open waits for a writer
    forever); the descriptor is checked to be a regular file before anything is read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(uri, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket: it cannot be opened at all
            raise OSError(exc.errno, "not a regular file: a socket", uri) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = _KINDS.get(stat.S_IFMT(mode), "not a plain file")
        raise OSError(errno.EINVAL, f"not a regular file: {kind}", uri)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _raise_source_error(exc: OSError) -> None:
    raise SourceError(f"cannot list {exc.filename!r}: {exc.strerror}") from exc


def _iter_url(url: str, storage_options: dict[str, Any]) -> Iterator[FileRef]:
    import fsspec

    head, sep, chain = url.partition("::")
    try:
        fs, path = fsspec.core.url_to_fs(url, **storage_options)
        if _GLOB_CHARS.search(path):
            found = fs.glob(path, detail=True)
        elif fs.isdir(path):
            found = fs.find(path, detail=True)
        elif fs.exists(path):
            found = {path: fs.info(path)}
        else:
            raise SourceNotFoundError(f"no such object: {url!r}")
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, google-auth errors alike
        raise SourceError(f"cannot list {url!r}: {type(exc).__name__}: {exc}") from exc
    suffix = f"::{chain}" if sep else ""
    base = path.rstrip("/")
    for name in sorted(found):
        relative = name[len(base) :] if name.startswith(base) else name
        if any(part.startswith(".") for part in relative.split("/")):
            continue  # hidden files and folders, as in a local walk
        info = found[name]
        if info.get("type", "file") != "file":
            continue
        yield fs.unstrip_protocol(name) + suffix, info.get("size"), modified_us(info)


def modified_us(info: Mapping[str, Any]) -> int | None:
    """The modification time an fsspec listing gives (microseconds since the epoch, UTC).

    Filesystems name it differently: ``mtime`` (local, memory, zip: a number or a datetime),
    ``LastModified`` (s3fs), ``updated`` (gcsfs, ISO text), ``last_modified`` (adlfs).
    """
    import datetime as dt

    for key in ("mtime", "LastModified", "updated", "last_modified"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return int(value.timestamp() * 1_000_000)
        if isinstance(value, (int, float)):
            return int(value * 1_000_000)
    return None


class _Reader:
    """Reads byte ranges of the objects of one batch, one filesystem per URL family."""

    def __init__(self, storage_options: Mapping[str, Any]):
        self.storage_options = dict(storage_options)
        self._fs: dict[str, Any] = {}
        self.bytes_read = 0

    def _fs_path(self, uri: str) -> tuple[Any, str]:
        import fsspec

        key = uri.split("://", 1)[0] + "|" + uri.partition("::")[2]
        fs = self._fs.get(key)
        if fs is None:
            fs, path = fsspec.core.url_to_fs(uri, **self.storage_options)
            self._fs[key] = fs
            return fs, path
        return fs, fs._strip_protocol(uri.partition("::")[0])

    def read(self, uri: str, start: int, end: int) -> bytes:
        if _is_url(uri):
            fs, path = self._fs_path(uri)
            data = fs.cat_file(path, start=start, end=end)
        else:
            with _open_regular(uri) as f:
                f.seek(start)
                data = f.read(end - start)
        self.bytes_read += len(data)
        return data

    def size(self, uri: str) -> int:
        if _is_url(uri):
            fs, path = self._fs_path(uri)
            return int(fs.size(path))
        return os.stat(uri).st_size

    def first_reads(
        self, refs: Sequence[FileRef], prefix: int
    ) -> list[tuple[bytes | Exception, int | None, int | None]]:
        """The first bytes of every object, its size and modification time (concurrently
        where the fs can).

        Local files get a smaller first read (:data:`LOCAL_PREFIX`): growing is cheap there.
        """
        out: list[tuple[bytes | Exception, int | None, int | None]] = [(b"", None, None)] * len(
            refs
        )
        remote = []
        local_prefix = min(prefix, LOCAL_PREFIX)
        for i, (uri, size, modified) in enumerate(refs):
            if _is_url(uri):
                remote.append(i)
                continue
            try:
                with _open_regular(uri) as f:
                    st = os.fstat(f.fileno())
                    size, modified = st.st_size, st.st_mtime_ns // 1000
                    data = f.read(local_prefix)
                self.bytes_read += len(data)
                out[i] = (data, size, modified)
            except OSError as exc:
                out[i] = (exc, size, modified)
        groups: dict[int, tuple[Any, list[tuple[int, str]]]] = {}
        for i in remote:
            try:
                fs, path = self._fs_path(refs[i][0])
            except Exception as exc:  # noqa: BLE001 - a URL that cannot be opened is a row
                out[i] = (exc, refs[i][1], refs[i][2])
                continue
            groups.setdefault(id(fs), (fs, []))[1].append((i, path))
        for fs, members in groups.values():
            paths = [path for _, path in members]
            ends = [min(prefix, refs[i][1] or prefix) for i, _ in members]
            try:
                results = fs.cat_ranges(paths, [0] * len(paths), ends, on_error="return")
            except Exception as exc:  # noqa: BLE001
                results = [exc] * len(paths)
            for (i, _), res in zip(members, results):
                if isinstance(res, bytes):
                    self.bytes_read += len(res)
                elif not isinstance(res, Exception):
                    res = OSError(str(res))
                out[i] = (res, refs[i][1], refs[i][2])
        return out


def _parse_growing(
    uri: str, first: bytes, size: int, prefix: int, read: Callable[[str, int, int], bytes]
) -> tuple[ParsedHeader, bytes]:
    """Parse, fetching more of the object while the header runs past the bytes held."""
    buf = first
    while True:
        try:
            return parse_header(buf, complete=len(buf) >= size), buf
        except NeedMore as more:
            want = min(size, max(more.needed + 4096, 2 * len(buf), prefix))
            buf = buf + read(uri, len(buf), want)
            if len(buf) < want:  # the object shrank while we read it
                size = len(buf)


def _fallback(
    uri: str, size: int, read: Callable[[str, int, int], bytes]
) -> tuple[ParsedHeader, bytes]:
    """Let pydicom read an object the fast scanner does not handle, and re-encode its header.

    The dataset pydicom builds is written back as explicit VR little endian and scanned again,
    so every value goes through the same column conversion as the fast path. Pixel Data is
    located in the original bytes, where pydicom stopped.
    """

    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    whole = read(uri, 0, size)
    fp = BytesIO(whole)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(fp, force=True, stop_before_pixels=True)
            header_end = fp.tell()
            if not len(ds):
                raise ValueError("no data elements")
            out = DicomBytesIO()
            out.is_little_endian, out.is_implicit_VR = True, False
            write_dataset(out, ds)
        except Exception as exc:  # noqa: BLE001 - pydicom's own reason becomes the message
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InvalidDicomError(f"not readable as DICOM (pydicom: {reason})") from exc
    data = out.getvalue()
    elements: dict[int, tuple[bytes | None, int, int]] = {}
    if data:
        walk_to_end(data, True, False, elements, "the dataset pydicom re-encoded")
    meta = {
        int(elem.tag): elem.value.encode("latin-1", "replace")
        for elem in getattr(ds, "file_meta", {}).values()
        if isinstance(elem.value, str)
    }
    ts = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    implicit, little = ds.original_encoding
    pixel = _pixel_element(whole, header_end, bool(little), bool(implicit))
    parsed = ParsedHeader(
        data=data,
        little=True,
        implicit=False,
        transfer_syntax=str(ts) if ts else None,
        meta=meta,
        elements=elements,
        data_offset=None,
        header_end=header_end,
        pixel=pixel,
        pixel_offset=pixel[2] if pixel else None,
        preamble=whole[128:132] == b"DICM",
        notes=["read through pydicom: non-standard encoding"],
    )
    return parsed, whole


def _pixel_element(
    whole: bytes, pos: int, little: bool, implicit: bool
) -> tuple[int, bytes | None, int, int] | None:
    """(tag, VR, value offset, length) of the Pixel Data element starting at ``pos``, if any."""
    import struct

    if pos + 8 > len(whole):
        return None
    endian = "<" if little else ">"
    group, elem = struct.unpack_from(endian + "HH", whole, pos)
    if group != 0x7FE0:
        return None
    vr = whole[pos + 4 : pos + 6]
    if implicit or vr not in ALL_VRS:
        return (
            group << 16 | elem,
            None,
            pos + 8,
            struct.unpack_from(endian + "L", whole, pos + 4)[0],
        )
    length = struct.unpack_from(endian + "L", whole, pos + 8)[0]
    return group << 16 | elem, vr, pos + 12, length


#: What :func:`read_headers` gives per object: size, parsed header, the bytes held, the error,
#: the modification time.
HeaderResult = tuple[int | None, ParsedHeader | None, bytes, str | None, int | None]


def read_headers(
    refs: Sequence[FileRef],
    storage_options: Mapping[str, Any],
    prefix: int = DEFAULT_PREFIX,
) -> tuple[list[HeaderResult], dict[str, int]]:
    """Parse the header of every object of a batch.

    Returns per object ``(size, parsed or None, bytes held, error message or None, modified)``
    and the batch's counters (bytes read, objects read through the pydicom fallback).
    """
    reader = _Reader(storage_options)
    firsts = reader.first_reads(refs, prefix)
    results: list[HeaderResult] = []
    fallbacks = 0
    for (uri, _, _), (first, size, modified) in zip(refs, firsts):
        if isinstance(first, Exception):
            results.append((size, None, b"", _describe_read_error(first), modified))
            continue
        try:
            if size is None:
                size = reader.size(uri) if len(first) >= prefix else len(first)
            try:
                parsed, held = _parse_growing(uri, first, size, prefix, reader.read)
            except Unsupported:
                fallbacks += 1
                parsed, held = _fallback(uri, size, reader.read)
            error = parsed.error
            if not parsed.elements and parsed.pixel is None:
                error = "no DICOM data elements after the file meta information"
            results.append((size, parsed, held, error, modified))
        except InvalidDicomError as exc:
            results.append((size, None, b"", str(exc), modified))
        except OSError as exc:
            results.append((size, None, b"", _describe_read_error(exc), modified))
        except Exception as exc:  # noqa: BLE001 - one object must never stop its batch
            unexpected = f"unexpected {type(exc).__name__}: {exc}"
            results.append((size, None, b"", unexpected, modified))
    return results, {"bytes_read": reader.bytes_read, "fallbacks": fallbacks}


def _describe_read_error(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"cannot read: file not found ({exc})"
    if isinstance(exc, PermissionError):
        return f"cannot read: permission denied ({exc})"
    if isinstance(exc, OSError) and str(exc.strerror).startswith("not a regular file"):
        return f"cannot read: {exc.strerror}"
    return f"cannot read: {type(exc).__name__}: {exc}"
