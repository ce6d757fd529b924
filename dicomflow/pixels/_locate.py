"""Where each frame's bytes are: offset arithmetic (native) or the encapsulation items.

Encapsulated Pixel Data (PS3.5 A.4) is a sequence of items: first the Basic Offset Table, then
one or more fragments per frame, then a Sequence Delimitation Item. A frame is found from, in
order of preference, the Extended Offset Table, the Basic Offset Table, or one scan over the item
headers (8 bytes each) that never reads fragment contents beyond their first 4 bytes.

The result of locating is a tuple of ``number_of_frames + 1`` absolute file offsets: frame ``i``
is contained in ``[offsets[i], offsets[i + 1])`` (item headers included; the last range may run
to the end of the file). The tuple can be stored in the catalog as the ``frame_offsets`` list
column so the scan is done once.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil
from typing import IO

from ..codecs import PixelFormat, codestream_starts
from ._errors import FrameDecodeError, PixelDataError, PixelSizeError

__all__ = ["FrameRef", "encapsulated_offsets", "frame_refs", "unwrap_fragments"]

_ITEM = b"\xfe\xff\x00\xe0"
_SEQ_END = b"\xfe\xff\xdd\xe0"


@dataclass(frozen=True, slots=True)
class FrameRef:
    """The bytes of one frame: small, picklable, one per dask task.

    Parameters
    ----------
    uri : str
        The file (local path or fsspec URL).
    index : int
        0-based frame number in that file.
    start, stop : int
        The byte range to read (absolute offsets in the file).
    fmt : PixelFormat
        How to decode it.
    bit_offset : int
        Native 1-bit data whose frames are not byte aligned: bits to skip.
    swap_ow : bool
        8-bit native data stored as OW in Explicit VR Big Endian: swap byte pairs first.
    whole_file : bool
        Deflated data sets: the frame must be decoded from the whole (inflated) file.
    """

    uri: str
    index: int
    start: int
    stop: int
    fmt: PixelFormat
    bit_offset: int = 0
    swap_ow: bool = False
    whole_file: bool = False


def _read(f: IO[bytes], offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def encapsulated_offsets(
    f: IO[bytes],
    fmt: PixelFormat,
    pixel_offset: int,
    pixel_length: int,
    *,
    extended_offsets: Sequence[int] | None = None,
    uri: str = "",
) -> tuple[int, ...]:
    """Locate the frames of encapsulated pixel data.

    Parameters
    ----------
    f : binary file
        The object, opened for random access (fsspec file or local file).
    fmt : PixelFormat
        Its pixel description (number of frames, transfer syntax).
    pixel_offset, pixel_length : int
        Catalog columns: offset of the Pixel Data value, and bytes from there to the end.
    extended_offsets : sequence of int, optional
        The Extended Offset Table (7FE0,0001) values when the catalog carries them.
    uri : str
        For error messages.

    Returns
    -------
    tuple of int
        ``number_of_frames + 1`` absolute offsets; see the module docstring.
    """
    end = pixel_offset + pixel_length
    n = fmt.number_of_frames
    if n * 8 > pixel_length:
        raise PixelSizeError(
            f"{uri}: Number of Frames {n} cannot fit in {pixel_length} bytes of encapsulated "
            "pixel data (each frame needs at least one 8-byte item)"
        )
    head = _read(f, pixel_offset, 8)
    if len(head) < 8 or head[:4] != _ITEM:
        raise PixelDataError(f"{uri}: encapsulated pixel data does not start with an item")
    (bot_length,) = struct.unpack("<I", head[4:])
    first = pixel_offset + 8 + bot_length
    if first > end:
        raise PixelSizeError(f"{uri}: Basic Offset Table length {bot_length} runs past the end")

    if extended_offsets is not None and len(extended_offsets) == n:
        offsets = [first + int(o) for o in extended_offsets]
        if _plausible(offsets, first, end):
            return (*offsets, end)

    if bot_length and bot_length == 4 * n:
        table = struct.unpack(f"<{n}I", _read(f, pixel_offset + 8, bot_length))
        offsets = [first + o for o in table]
        if _plausible(offsets, first, end):
            return (*offsets, end)

    return _scan(f, fmt, first, end, uri)


def _plausible(offsets: list[int], first: int, end: int) -> bool:
    """Whether an offset table can be right: it starts at the first fragment, and every frame
    has room for one item header at least (a frame needs a fragment: frames <= fragments)."""
    return (
        offsets[0] == first
        and all(b - a >= 8 for a, b in zip(offsets, offsets[1:], strict=False))
        and offsets[-1] + 8 <= end
    )


def _scan(f: IO[bytes], fmt: PixelFormat, first: int, end: int, uri: str) -> tuple[int, ...]:
    n = fmt.number_of_frames
    syntax = fmt.syntax
    frame_starts = codestream_starts(syntax) if syntax is not None else ()
    peek = n > 1 and bool(frame_starts)
    fragments: list[int] = []
    starts: list[int] = []
    pos = first
    stop = end
    while pos + 8 <= end:
        header = _read(f, pos, 12 if peek else 8)
        if len(header) < 8:
            break
        if header[:4] == _SEQ_END:
            stop = pos
            break
        if header[:4] != _ITEM:
            raise PixelDataError(f"{uri}: expected an item at byte {pos} of encapsulated data")
        (length,) = struct.unpack("<I", header[4:8])
        fragments.append(pos)
        if peek and header[8:12].startswith(frame_starts):
            starts.append(pos)
        pos += 8 + length
    if pos > end:
        raise FrameDecodeError(uri, len(fragments) - 1, "fragment runs past the end of the file")
    if not fragments:
        raise PixelDataError(f"{uri}: encapsulated pixel data holds no fragments")
    if n == 1:
        return (fragments[0], stop)
    if len(fragments) == n:
        return (*fragments, stop)
    if len(starts) >= n and starts[0] == fragments[0]:
        # more frame starts than frames: pydicom also keeps only the declared frames first
        return (*starts[:n], starts[n] if len(starts) > n else stop)
    raise PixelDataError(
        f"{uri}: {len(fragments)} fragments cannot be assigned to {n} frames "
        "(no usable offset table)"
    )


def unwrap_fragments(buf, uri: str = "", index: int = 0) -> bytes:
    """Concatenate the fragment values of the items in ``buf`` (one frame's byte range).

    Stops at a Sequence Delimitation Item or at the end of ``buf``; an item that runs past the
    end of ``buf`` is an error.
    """
    if not isinstance(buf, bytes):
        buf = bytes(buf)
    parts: list[bytes] = []
    pos = 0
    size = len(buf)
    while pos + 8 <= size:
        tag = buf[pos : pos + 4]
        if tag == _SEQ_END:
            break
        if tag != _ITEM:
            if parts:  # bytes after the last item of the frame (trailing elements)
                break
            raise FrameDecodeError(uri, index, f"no fragment item at byte {pos} of the frame")
        (length,) = struct.unpack("<I", buf[pos + 4 : pos + 8])
        if pos + 8 + length > size:
            raise FrameDecodeError(uri, index, "fragment truncated: the file ends inside it")
        parts.append(buf[pos + 8 : pos + 8 + length])
        pos += 8 + length
    if not parts:
        raise FrameDecodeError(uri, index, "no fragment found for the frame")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def native_refs(
    uri: str,
    fmt: PixelFormat,
    pixel_offset: int,
    pixel_length: int,
    size: int | None,
    *,
    swap_ow: bool = False,
) -> list[FrameRef]:
    """Frame byte ranges of native (uncompressed) pixel data, after checking declared sizes.

    Raises
    ------
    PixelSizeError
        When Rows x Columns x Samples x Bits Allocated x Frames need more bytes than the
        Pixel Data element (or the file) holds. Nothing is allocated before this check.
    """
    needed = fmt.native_nbytes
    available = pixel_length
    if size is not None:
        available = min(available, size - pixel_offset)
    if needed > available:
        raise PixelSizeError(
            f"{uri}: {fmt.number_of_frames} frame(s) of {fmt.rows} x {fmt.columns} x "
            f"{fmt.samples_per_pixel} x {fmt.bits_allocated} bits need {needed:,} bytes but "
            f"only {available:,} bytes of pixel data are present"
        )
    refs = []
    for i in range(fmt.number_of_frames):
        first_bit = i * fmt.frame_bits
        start = pixel_offset + first_bit // 8
        stop = pixel_offset + ceil((first_bit + fmt.frame_bits) / 8)
        bit_offset = first_bit % 8
        if swap_ow:  # read whole byte pairs around the frame
            bit_offset = ((start - pixel_offset) % 2) * 8
            start -= (start - pixel_offset) % 2
            stop += (stop - pixel_offset) % 2
        refs.append(FrameRef(uri, i, start, stop, fmt, bit_offset, swap_ow))
    return refs


def frame_refs(
    f: IO[bytes] | None,
    uri: str,
    fmt: PixelFormat,
    pixel_offset: int | None,
    pixel_length: int | None,
    size: int | None,
    *,
    frame_offsets: Sequence[int] | None = None,
    extended_offsets: Sequence[int] | None = None,
) -> list[FrameRef]:
    """Every frame of one object as :class:`FrameRef`, checking declared sizes first.

    ``f`` is only read for encapsulated data without stored ``frame_offsets`` and for 8-bit
    Explicit VR Big Endian data (to learn the Pixel Data VR); it may be ``None`` otherwise.
    """
    if fmt.is_deflated:
        if size is not None and fmt.native_nbytes > size * 1032:  # deflate's best ratio
            raise PixelSizeError(
                f"{uri}: {fmt.native_nbytes:,} bytes of pixel data cannot come from a "
                f"{size:,}-byte deflated file"
            )
        stop = size if size is not None else -1
        return [
            FrameRef(uri, i, 0, stop, fmt, whole_file=True) for i in range(fmt.number_of_frames)
        ]
    if pixel_offset is None or pixel_length is None:
        raise PixelDataError(f"{uri}: the catalog row has no pixel data location")
    if size is not None and pixel_offset > size:
        raise PixelSizeError(f"{uri}: pixel data offset {pixel_offset} is beyond the file end")
    if not fmt.is_encapsulated:
        swap_ow = False
        if not fmt.is_little_endian and fmt.bits_allocated == 8 and f is not None:
            swap_ow = _read(f, pixel_offset - 8, 2) == b"OW"
        return native_refs(uri, fmt, pixel_offset, pixel_length, size, swap_ow=swap_ow)
    if size is not None:
        pixel_length = min(pixel_length, size - pixel_offset)
    if frame_offsets is None:
        if f is None:
            raise PixelDataError(f"{uri}: encapsulated frames need the file to be located")
        frame_offsets = encapsulated_offsets(
            f, fmt, pixel_offset, pixel_length, extended_offsets=extended_offsets, uri=uri
        )
    if len(frame_offsets) != fmt.number_of_frames + 1:
        raise PixelDataError(
            f"{uri}: {len(frame_offsets) - 1} located frames for Number of Frames "
            f"{fmt.number_of_frames}"
        )
    return [
        FrameRef(uri, i, int(frame_offsets[i]), int(frame_offsets[i + 1]), fmt)
        for i in range(fmt.number_of_frames)
    ]
