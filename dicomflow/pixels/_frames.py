"""Lazy frames: a dask array whose chunks each read and decode only their own frame's bytes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import fsspec
import numpy as np
import pyarrow as pa
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ..codecs import (
    DEFAULT_MAX_FRAME_BYTES,
    PixelFormat,
    decode_frame,
    decode_frames,
    decoders_for,
    stored_frames,
)
from ._errors import FrameDecodeError, PixelDataError
from ._locate import FrameRef, frame_refs
from ._table import as_arrow, as_rows

__all__ = [
    "MIN_CHUNK_BYTES",
    "FrameTransform",
    "PixelOptions",
    "frames",
    "frames_array",
    "load_frame",
    "locate_frames",
    "row_refs",
]


#: Decoded bytes a chunk holds at least: smaller frames are grouped (see :func:`frames_array`).
MIN_CHUNK_BYTES = 4096


@dataclass(frozen=True, slots=True)
class PixelOptions:
    """How frames are turned into arrays.

    Parameters
    ----------
    modality_lut : bool
        Apply Rescale Slope/Intercept (e.g. CT to Hounsfield units); output is ``float32``.
    invert_monochrome1 : bool
        Invert MONOCHROME1 frames within Bits Stored so that higher is brighter.
    as_rgb : bool
        Convert YBR_FULL/YBR_FULL_422 to RGB, as pydicom's ``pixel_array`` does (default).
    palette : bool
        Map PALETTE COLOR frames through their lookup tables to RGB.
    backend : str, optional
        Force one decoding backend (``"imagecodecs"``, ``"pydicom"``...); default: the
        fastest that gives pydicom's values.
    exact : bool
        Lossy JPEG: decode exactly as pydicom's ``pixel_array`` (its plugin first, default), or
        ``False`` for the fastest decoder, whose values may differ by one grey level (the
        inverse DCT rounding ISO 10918 leaves to decoders). Other syntaxes are always exact.
    frames_per_chunk : int
        Frames per dask chunk (1: every frame is its own task, unless frames are smaller than
        ``MIN_CHUNK_BYTES``, 4 KiB: those are grouped to hold at least that).
    max_frame_bytes : int
        The decode budget: a frame that would decode to more bytes is refused before any
        decoder runs (:class:`PixelSizeError`, reported as a :class:`FrameDecodeError`).

    Examples
    --------
    >>> import numpy as np
    >>> PixelOptions(modality_lut=True).output_dtype(np.dtype("int16"))
    dtype('float32')
    """

    modality_lut: bool = False
    invert_monochrome1: bool = False
    as_rgb: bool = True
    palette: bool = False
    backend: str | None = None
    exact: bool = True
    frames_per_chunk: int = 1
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    def output_dtype(self, decoded: np.dtype, palette_dtype: np.dtype | None = None) -> np.dtype:
        """The dtype frames have after these options."""
        if palette_dtype is not None:
            return palette_dtype
        if self.modality_lut:
            return np.dtype("float32")
        return np.dtype(decoded)


@dataclass(frozen=True, slots=True)
class FrameTransform:
    """Per-frame value mapping applied after decoding (only what the options asked for)."""

    slope: float = 1.0
    intercept: float = 0.0
    rescale: bool = False
    invert_bits: int = 0  # MONOCHROME1: Bits Stored to invert within (0: do not invert)
    signed: bool = False
    palette: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def apply(self, arr: np.ndarray) -> np.ndarray:
        if self.palette is not None:
            return _apply_palette(arr, self.palette)
        if self.invert_bits:
            if self.signed:
                arr = -1 - arr.astype(np.int64)
            else:
                arr = (1 << self.invert_bits) - 1 - arr.astype(np.int64)
        if self.rescale:
            arr = arr.astype(np.float32)
            if self.slope != 1.0:
                arr *= np.float32(self.slope)
            if self.intercept != 0.0:
                arr += np.float32(self.intercept)
        return arr


def _apply_palette(arr: np.ndarray, palette: Mapping[str, Any]) -> np.ndarray:
    from pydicom.dataset import Dataset
    from pydicom.pixels import apply_color_lut

    ds = Dataset()
    for keyword, value in palette.items():
        setattr(ds, keyword, value)
    return apply_color_lut(arr, ds)


def load_frame(
    ref: FrameRef,
    options: PixelOptions = PixelOptions(),  # noqa: B008 - frozen, immutable default
    transform: FrameTransform | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> np.ndarray:
    """Read exactly one frame's bytes and decode them: the body of every dask chunk.

    Raises
    ------
    FrameDecodeError
        Naming the file and frame, whatever went wrong (read, locate or decode).
    """
    try:
        if ref.whole_file:
            arr = _from_whole_file(ref, options, storage_options)
        else:
            data = read_range(ref.uri, ref.start, ref.stop, storage_options)
            if ref.fmt.is_encapsulated:
                from ._locate import unwrap_fragments

                encoded = unwrap_fragments(data, ref.uri, ref.index)
                arr = decode_frame(
                    encoded,
                    ref.fmt,
                    ref.fmt.transfer_syntax_uid,
                    backend=options.backend,
                    as_rgb=options.as_rgb,
                    exact=options.exact,
                    max_frame_bytes=options.max_frame_bytes,
                )
            else:
                if len(data) < ref.stop - ref.start:
                    raise PixelDataError(
                        f"read {len(data)} bytes, the frame needs {ref.stop - ref.start}"
                    )
                arr = decode_frame(
                    _native_frame(data, ref),
                    ref.fmt,
                    _native_syntax(ref.fmt),
                    as_rgb=options.as_rgb,
                    max_frame_bytes=options.max_frame_bytes,
                )
    except FrameDecodeError:
        raise
    except Exception as exc:
        raise FrameDecodeError(ref.uri, ref.index, f"{type(exc).__name__}: {exc}") from exc
    if transform is not None:
        arr = transform.apply(arr)
    return arr


def read_range(
    uri: str, start: int, stop: int, storage_options: Mapping[str, Any] | None = None
) -> bytes | np.ndarray:
    """The bytes ``[start, stop)`` of ``uri``: a range request, never the whole object.

    Local files are read straight into a fresh writable buffer (no extra copy); anything else
    goes through ``fsspec``'s ``cat_file``.
    """
    if "://" not in uri or uri.startswith("file://"):
        path = uri[7:] if uri.startswith("file://") else uri
        buf = np.empty(max(stop - start, 0), np.uint8)
        with open(path, "rb", buffering=0) as f:
            f.seek(start)
            n = f.readinto(buf.data)
        return buf[:n]
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    return fs.cat_file(path, start=start, end=stop)


def _native_syntax(fmt: PixelFormat) -> str:
    """The syntax native frames are decoded in: their own, or (a UID the table does not know)
    Explicit VR Little Endian, as pydicom reads unknown syntaxes."""
    return fmt.transfer_syntax_uid if fmt.syntax is not None else "1.2.840.10008.1.2.1"


def _native_frame(data: bytes | np.ndarray, ref: FrameRef) -> bytes | np.ndarray:
    """Exactly the frame's bytes from the range read around it: 8-bit samples stored as OW in
    big endian have their byte pairs swapped back, 1-bit frames are realigned to a byte."""
    if ref.swap_ow:
        raw = np.frombuffer(data[: len(data) // 2 * 2], "<u2").byteswap().view("u1")
        return raw[ref.bit_offset // 8 :]
    if ref.bit_offset:
        bits = np.unpackbits(np.frombuffer(data, "u1"), bitorder="little")
        frame = bits[ref.bit_offset : ref.bit_offset + ref.fmt.frame_bits]
        return np.packbits(frame, bitorder="little")
    return data


def _from_whole_file(
    ref: FrameRef, options: PixelOptions, storage_options: Mapping[str, Any] | None
) -> np.ndarray:
    """A frame of a deflated data set: the file is inflated by pydicom, the frame decoded here."""
    from pydicom import dcmread

    with fsspec.open(ref.uri, "rb", **dict(storage_options or {})) as f:
        ds = dcmread(f, force=True)
    for index, data in enumerate(stored_frames(ds, ref.fmt)):
        if index == ref.index:
            return decode_frame(
                data,
                ref.fmt,
                ref.fmt.transfer_syntax_uid,
                as_rgb=options.as_rgb,
                max_frame_bytes=options.max_frame_bytes,
            )
    raise PixelDataError(f"the data set holds no frame {ref.index}")


def _load_chunk(
    refs: tuple[FrameRef, ...],
    options: PixelOptions,
    transforms: tuple[FrameTransform | None, ...],
    storage_options: Mapping[str, Any] | None,
    dtype: np.dtype,
) -> np.ndarray:
    batched = _batched(refs, options, storage_options)
    if batched is None:
        decoded = [load_frame(r, options, t, storage_options) for r, t in zip(refs, transforms)]
    else:
        decoded = [a if t is None else t.apply(a) for a, t in zip(batched, transforms)]
    out = [arr.astype(dtype, copy=False) for arr in decoded]
    return out[0][np.newaxis] if len(out) == 1 else np.stack(out)


def _batched(
    refs: tuple[FrameRef, ...], options: PixelOptions, storage_options: Mapping[str, Any] | None
) -> list[np.ndarray] | None:
    """A chunk's frames decoded in one call, where the chosen backend decodes batches (the
    GPU's) and they share one encapsulated format; ``None``: decode them one by one."""
    if options.backend is None or len(refs) < 2:
        return None
    fmt = refs[0].fmt
    if not fmt.is_encapsulated or any(r.whole_file or r.fmt != fmt for r in refs):
        return None
    chain = decoders_for(fmt.transfer_syntax_uid, options.backend, exact=options.exact)
    if not any(d.batch for d in chain):
        return None
    from ._locate import unwrap_fragments

    encoded = []
    for ref in refs:
        try:
            data = read_range(ref.uri, ref.start, ref.stop, storage_options)
            encoded.append(unwrap_fragments(data, ref.uri, ref.index))
        except FrameDecodeError:
            raise
        except Exception as exc:
            raise FrameDecodeError(ref.uri, ref.index, f"{type(exc).__name__}: {exc}") from exc
    decoded = decode_frames(
        encoded,
        fmt,
        fmt.transfer_syntax_uid,
        backend=options.backend,
        exact=options.exact,
        as_rgb=options.as_rgb,
        max_frame_bytes=options.max_frame_bytes,
    )
    for ref, arr in zip(refs, decoded, strict=True):
        if not isinstance(arr, np.ndarray):
            raise FrameDecodeError(ref.uri, ref.index, f"{type(arr).__name__}: {arr}")
    return decoded  # type: ignore[return-value]


def _frames_token(
    refs: Sequence[FrameRef],
    transforms: Sequence[FrameTransform | None],
    options: PixelOptions,
    storage_options: Mapping[str, Any] | None,
    dtype: np.dtype,
) -> str:
    """A deterministic token of what locates and maps every frame.

    The distinct files, formats and transforms are tokenized once each and the per-frame
    numbers as one integer array: tokenizing a million small objects one by one takes minutes
    and gigabytes. Formats are told apart by value: every row has its own (equal) one, and
    tokenizing 300 equal formats took most of a 300-slice series' volume assembly.
    """
    uris: dict[str, int] = {}
    formats: dict[PixelFormat, int] = {}  # by value: the rows of a series have equal ones
    kinds: dict[Any, tuple[int, FrameTransform | None]] = {}

    def kind(transform: FrameTransform | None) -> int:
        palette = None if transform is None else id(transform.palette)
        return kinds.setdefault((transform, palette), (len(kinds), transform))[0]

    n = len(refs)
    fields = (
        (uris.setdefault(r.uri, len(uris)) for r in refs),
        (r.index for r in refs),
        (r.start for r in refs),
        (r.stop for r in refs),
        (r.bit_offset for r in refs),
        (r.swap_ow for r in refs),
        (r.whole_file for r in refs),
        (formats.setdefault(r.fmt, len(formats)) for r in refs),
        (kind(t) for t in transforms),
    )
    located = np.empty((len(fields), n), np.int64)
    for row, values in zip(located, fields, strict=True):
        row[:] = np.fromiter(values, np.int64, count=n)
    return tokenize(
        list(uris),
        list(formats),
        [t for _, t in kinds.values()],
        located,
        options,
        dict(storage_options or {}),
        dtype,
    )


def frames_array(
    refs: Sequence[FrameRef],
    *,
    options: PixelOptions = PixelOptions(),  # noqa: B008
    transforms: Sequence[FrameTransform | None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    dtype: np.dtype | None = None,
    frame_shape: tuple[int, ...] | None = None,
    name: str | None = None,
) -> da.Array:
    """A dask array ``(frames, rows, columns[, samples])`` over the given frame references.

    Nothing is read here; each chunk is one task reading and decoding only its frames: as many
    as ``options.frames_per_chunk``, and frames smaller than :data:`MIN_CHUNK_BYTES` grouped so
    that a chunk holds at least that many bytes (a task's bookkeeping is about a kilobyte:
    a megabyte of 1-byte frames would otherwise take gigabytes).
    """
    if not refs:
        raise PixelDataError("no frames")
    if transforms is None:
        transforms = [None] * len(refs)
    fmt = refs[0].fmt
    if frame_shape is None:
        frame_shape = fmt.frame_shape
    if dtype is None:
        dtype = options.output_dtype(fmt.dtype)
    frame_bytes = max(int(np.prod(frame_shape)) * np.dtype(dtype).itemsize, 1)
    per = max(1, int(options.frames_per_chunk), -(-MIN_CHUNK_BYTES // frame_bytes))
    if name is None:  # deterministic: the same frames with the same options share keys
        token = _frames_token(refs, transforms, options, storage_options, np.dtype(dtype))
        name = f"dicomflow-frames-{token}"
    layer: dict = {}
    sizes = []
    zeros = (0,) * len(frame_shape)
    shared_options = dict(storage_options or {})
    for block, start in enumerate(range(0, len(refs), per)):
        chunk_refs = tuple(refs[start : start + per])
        chunk_t = tuple(transforms[start : start + per])
        layer[(name, block, *zeros)] = (
            _load_chunk,
            chunk_refs,
            options,
            chunk_t,
            shared_options,
            np.dtype(dtype),
        )
        sizes.append(len(chunk_refs))
    chunks = (tuple(sizes), *((n,) for n in frame_shape))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    return da.Array(graph, name, chunks, dtype=dtype)


def _fs_open(uri: str, storage_options: Mapping[str, Any] | None):
    return fsspec.open(uri, "rb", **dict(storage_options or {}))


def row_refs(
    row: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None
) -> list[FrameRef]:
    """Frame references for one catalog row (reads the file only to locate encapsulated frames).

    A ``frame_offsets`` column, when present, is used instead of reading the offset table.
    """
    uri = row.get("uri")
    if not uri:
        raise PixelDataError("catalog row without uri")
    if row.get("error") and row.get("pixel_offset") is None and not row.get("Rows"):
        raise PixelDataError(f"{uri}: the catalog recorded an error: {row['error']}")
    try:
        return _row_refs(row, uri, storage_options)
    except PixelDataError as exc:
        if row.get("error"):
            exc.add_note(f"the catalog recorded: {row['error']}")
        raise


def _row_refs(
    row: Mapping[str, Any], uri: str, storage_options: Mapping[str, Any] | None
) -> list[FrameRef]:
    fmt = PixelFormat.from_row(row)
    offsets = row.get("frame_offsets")
    extended = row.get("ExtendedOffsetTable")
    if isinstance(extended, bytes | bytearray):
        extended = np.frombuffer(extended, "<u8").tolist()
    needs_file = (fmt.is_encapsulated and offsets is None) or (
        not fmt.is_little_endian and fmt.bits_allocated == 8
    )
    size = row.get("size")
    if needs_file and not fmt.is_deflated:
        with _fs_open(uri, storage_options) as f:
            return frame_refs(
                f,
                uri,
                fmt,
                row.get("pixel_offset"),
                row.get("pixel_length"),
                size,
                frame_offsets=offsets,
                extended_offsets=extended,
            )
    return frame_refs(
        None,
        uri,
        fmt,
        row.get("pixel_offset"),
        row.get("pixel_length"),
        size,
        frame_offsets=offsets,
    )


def transform_for(row: Mapping[str, Any], options: PixelOptions) -> FrameTransform | None:
    """The per-frame value mapping the options ask for, from one catalog row."""
    photometric = str(row.get("PhotometricInterpretation") or "").upper()
    rescale = options.modality_lut
    invert = options.invert_monochrome1 and photometric == "MONOCHROME1"
    if not (rescale or invert):
        return None
    slope = row.get("RescaleSlope")
    intercept = row.get("RescaleIntercept")
    bits = int(row.get("BitsStored") or row.get("BitsAllocated") or 16)
    return FrameTransform(
        slope=float(slope) if slope is not None else 1.0,
        intercept=float(intercept) if intercept is not None else 0.0,
        rescale=rescale,
        invert_bits=bits if invert else 0,
        signed=bool(row.get("PixelRepresentation")),
    )


def palette_of(uri: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """The palette colour lookup table elements of one object (its header re-read by pydicom)."""
    from pydicom import dcmread

    keywords = [
        f"{c}PaletteColorLookupTable{part}"
        for c in ("Red", "Green", "Blue", "Alpha")
        for part in ("Descriptor", "Data")
    ] + [f"Segmented{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue", "Alpha")]
    keywords += ["PhotometricInterpretation", "BitsStored", "PixelRepresentation"]
    with _fs_open(uri, storage_options) as f:
        ds = dcmread(f, stop_before_pixels=True, force=True)
    return {k: ds[k].value for k in keywords if k in ds}


def frames(
    catalog: Any,
    *,
    options: PixelOptions = PixelOptions(),  # noqa: B008
    storage_options: Mapping[str, Any] | None = None,
) -> da.Array:
    """All frames of all rows of a catalog, in row order, as one lazy dask array.

    Parameters
    ----------
    catalog : catalog-like
        A dicomflow catalog, Arrow table, polars/pandas frame, one row mapping, or rows.
    options : PixelOptions
        Modality LUT, MONOCHROME1 inversion, YBR to RGB, palette, backend, chunking.
    storage_options : mapping, optional
        Passed to fsspec for every read.

    Returns
    -------
    dask.array.Array
        ``(frames, rows, columns)`` or ``(frames, rows, columns, samples)``; chunk ``i`` reads
        and decodes only its frames.

    Raises
    ------
    PixelSizeError
        A row declares more pixel data than its file holds (checked before anything else).
    PixelDataError
        Rows with different frame shapes or dtypes (use :func:`dicomflow.volumes`).

    Examples
    --------
    >>> arr = frames(catalog_table)            # doctest: +SKIP
    >>> arr[0].compute().shape                 # doctest: +SKIP
    (512, 512)
    """
    refs: list[FrameRef] = []
    transforms: list[FrameTransform | None] = []
    for row in as_rows(catalog):
        row_frame_refs = row_refs(row, storage_options)
        transform = transform_for(row, options)
        if options.palette and row.get("PhotometricInterpretation") == "PALETTE COLOR":
            transform = FrameTransform(palette=palette_of(row["uri"], storage_options))
        refs.extend(row_frame_refs)
        transforms.extend([transform] * len(row_frame_refs))
    if not refs:
        raise PixelDataError("the catalog holds no pixel data")
    if options.backend is not None:  # an explicit choice fails now, not in a worker later
        for tsuid in {r.fmt.transfer_syntax_uid for r in refs if r.fmt.is_encapsulated}:
            decoders_for(tsuid, options.backend)
    shapes = {r.fmt.frame_shape for r in refs}
    dtypes = {r.fmt.dtype for r in refs}
    if len(shapes) > 1 or len(dtypes) > 1:
        raise PixelDataError(
            f"frames of different shapes {sorted(shapes)} or dtypes {sorted(map(str, dtypes))}"
            " cannot form one array; group them with dicomflow.volumes()"
        )
    frame_shape = refs[0].fmt.frame_shape
    dtype = options.output_dtype(refs[0].fmt.dtype)
    if any(t is not None and t.palette is not None for t in transforms):
        probe = transforms[0].apply(np.zeros(frame_shape, refs[0].fmt.dtype))  # type: ignore[union-attr]
        frame_shape, dtype = probe.shape, probe.dtype
    return frames_array(
        refs,
        options=options,
        transforms=transforms,
        storage_options=storage_options,
        dtype=dtype,
        frame_shape=frame_shape,
    )


def locate_frames(catalog: Any, storage_options: Mapping[str, Any] | None = None) -> pa.Table:
    """The catalog with a ``frame_offsets`` column (list<int64>) locating every frame.

    For encapsulated pixel data this reads the offset table, or scans the item headers once;
    stored in the catalog, later reads go straight to each frame. Native pixel data needs no
    offsets (null). Rows that cannot be located keep null and get their reason in ``error``
    when they had none.

    Examples
    --------
    >>> located = locate_frames(catalog_table)          # doctest: +SKIP
    >>> located["frame_offsets"][0].as_py()[:3]        # doctest: +SKIP
    [1938, 2201134, 4400330]
    """
    table = as_arrow(catalog)
    offsets: list[list[int] | None] = []
    errors = table.column("error").to_pylist() if "error" in table.column_names else None
    for i, row in enumerate(table.to_pylist()):
        row = {**row, "frame_offsets": None}
        try:
            fmt = PixelFormat.from_row(row)
            if not fmt.is_encapsulated or fmt.is_deflated or row.get("pixel_offset") is None:
                offsets.append(None)
                continue
            refs = row_refs(row, storage_options)
            offsets.append([r.start for r in refs] + [refs[-1].stop])
        except PixelDataError as exc:
            offsets.append(None)
            if errors is not None and errors[i] is None and row.get("pixel_offset") is not None:
                errors[i] = f"frame location: {exc}"
    column = pa.array(offsets, type=pa.list_(pa.int64()))
    if "frame_offsets" in table.column_names:
        table = table.drop_columns(["frame_offsets"])
    table = table.append_column("frame_offsets", column)
    if errors is not None:
        index = table.column_names.index("error")
        table = table.set_column(index, "error", pa.array(errors, type=pa.string()))
    return table
