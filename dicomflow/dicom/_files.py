"""Writing objects atomically, locally or through fsspec, and naming them safely."""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..errors import CollisionError

__all__ = [
    "TMP_SUFFIX",
    "CollisionError",
    "atomic_path",
    "atomic_write",
    "is_url",
    "join",
    "remove_stale_temporaries",
    "replace_url",
    "safe_component",
    "temporary_token",
]

_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {f"{p}{i}" for p in ("COM", "LPT") for i in range(1, 10)}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")
MAX_COMPONENT = 120


def safe_component(value: object, *, max_length: int = MAX_COMPONENT) -> str:
    """One path component from an attribute value: no separators, traversal or reserved names.

    Characters that separate paths or are unsafe on common filesystems become ``_``; a result
    of only dots or nothing becomes ``_``; Windows device names get a ``_`` prefix; a long
    value is cut and suffixed with a short hash of the whole, so distinct values stay distinct.

    >>> safe_component("../../etc")
    '.._.._etc'
    >>> safe_component("CON")
    '_CON'
    """
    text = _UNSAFE.sub("_", str(value if value is not None else "")).strip(" ")
    if not text.strip("."):
        text = "_" + text.replace(".", "_") if text else "_"
    if text.split(".")[0].upper() in _RESERVED:
        text = "_" + text
    if len(text.encode()) > max_length:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        cut = text.encode()[: max_length - 13].decode("utf-8", "ignore")
        text = f"{cut}_{digest}"
    return text


def is_url(path: str) -> bool:
    return "://" in path or "::" in path


def join(root: str, *parts: str) -> str:
    root = root.rstrip("/") if is_url(root) else os.fspath(root)
    return "/".join([root, *parts]) if is_url(root) else os.path.join(root, *parts)


TMP_SUFFIX = ".dfltmp"


def atomic_write(
    path: str,
    data: bytes,
    *,
    storage_options: Mapping[str, Any] | None = None,
    fsync: bool = True,
) -> None:
    """Write ``data`` to ``path`` under a temporary name, then move it into place.

    Locally the final step is ``os.link``, which fails if the path exists, so a file is never
    silently overwritten: an existing file with the same bytes (a rerun after an interruption)
    is fine, different bytes are a :class:`CollisionError`. The data is fsynced before it gets
    its name (unless ``fsync=False``: still atomic, but not durable across a power loss;
    pipelines then check outputs on resume). With fsspec URLs the temporary object is moved
    into place with ``fs.mv``.
    """
    if is_url(path):
        _atomic_write_fsspec(path, data, dict(storage_options or {}))
        return
    folder = os.path.dirname(path) or "."
    # the fewest system calls a file costs (this runs once per output: thousands a second):
    # the folder is made only when the temporary file cannot be created without it, and the
    # temporary name is unique to this process without asking the kernel for randomness
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{temporary_token()}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, _CREATE, 0o666)
    except (FileNotFoundError, FileExistsError):  # no folder yet; a name in use (see below)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}{TMP_SUFFIX}")
        fd = os.open(tmp, _CREATE, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            with open(path, "rb") as f:
                existing = f.read()
            if existing != data:
                raise CollisionError(
                    f"{path} already holds different content; refusing to overwrite it"
                ) from None
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


#: a new file only (never one another writer made under the same name), not inherited by
#: processes this one starts
_CREATE = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)
_tmp_state: list[Any] = []  # [prefix, counter] of this process; emptied in a forked child


def temporary_token() -> str:
    """A temporary-name part no other writer uses: this process's id and 48 random bits,
    drawn once per process (a reused id, another host on a shared folder), and a counter.
    (Two threads making their first file at once might draw the same one: the second's
    exclusive create then fails, and it takes a fully random name.)"""
    if not _tmp_state:
        _tmp_state[:] = [f"{os.getpid():x}{uuid.uuid4().hex[:12]}", itertools.count()]
    return f"{_tmp_state[0]}{next(_tmp_state[1]):x}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_tmp_state.clear)


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[str]:
    """A temporary path beside ``path`` that becomes ``path`` when the block ends cleanly.

    For writers that need a path rather than bytes (a Parquet writer, a NIfTI stream, pwrite):
    they write to the yielded name, and on a clean exit it replaces ``path`` in one rename, so a
    reader sees the old file or the new one, never a part. On an exception (a full disk, a
    decode error, Ctrl-C) the temporary file is removed and ``path`` is untouched. The name ends
    in :data:`TMP_SUFFIX`, so :func:`remove_stale_temporaries` finds it after a kill.

    >>> with atomic_path("out/catalog.parquet") as tmp:          # doctest: +SKIP
    ...     pq.write_table(table, tmp)
    """
    final = os.fspath(path)
    folder = os.path.dirname(final) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(final)}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _atomic_write_fsspec(path: str, data: bytes, storage_options: dict[str, Any]) -> None:
    import fsspec

    fs, fs_path = fsspec.core.url_to_fs(path, **storage_options)
    if fs.exists(fs_path):
        if fs.cat_file(fs_path) != data:
            raise CollisionError(f"{path} already holds different content")
        return
    _move_into_place(fs, fs_path, data)


def replace_url(path: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Put ``data`` at an fsspec URL through a temporary object, replacing what is there.

    For objects whose newest copy must win (a received instance sent again); new objects that
    must never overwrite another go through :func:`atomic_write`.
    """
    import fsspec

    fs, fs_path = fsspec.core.url_to_fs(path, **dict(storage_options or {}))
    _move_into_place(fs, fs_path, data)


#: Bytes a remote file buffers before it sends them (one part of an S3 multipart upload; S3
#: takes parts of 5 MiB and more).
PUT_BLOCK = 8 << 20


def put_url(local: str, path: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Put the local file ``local`` at an fsspec URL, as :func:`replace_url` puts bytes: the
    file is streamed in blocks of `PUT_BLOCK` (not ``put_file``: s3fs reads every part of a
    multipart upload into memory at once), never read whole into memory."""
    import fsspec

    fs, fs_path = fsspec.core.url_to_fs(path, **dict(storage_options or {}))
    _move_into_place(fs, fs_path, local=local)


def _move_into_place(fs: Any, fs_path: str, data: bytes = b"", local: str | None = None) -> None:
    parent, name = fs_path.rsplit("/", 1)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    if local is not None:
        with open(local, "rb") as src, fs.open(tmp, "wb", block_size=PUT_BLOCK) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    else:
        fs.pipe_file(tmp, data)
    try:
        fs.mv(tmp, fs_path)
    finally:
        if fs.exists(tmp):
            fs.rm(tmp)


def remove_stale_temporaries(root: str, storage_options: Mapping[str, Any] | None = None) -> int:
    """Delete temporary files :func:`atomic_write` left under ``root`` when a run was killed."""
    count = 0
    if is_url(root):
        import fsspec

        fs, base = fsspec.core.url_to_fs(root, **dict(storage_options or {}))
        if fs.exists(base):
            for path in fs.find(base):
                if path.endswith(TMP_SUFFIX):
                    fs.rm(path)
                    count += 1
        return count
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(TMP_SUFFIX):
                os.unlink(os.path.join(folder, name))
                count += 1
    return count
