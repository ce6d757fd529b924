"""The decoded-size guard: what a frame would decode to is checked before any decoder runs.

A decoder allocates what the codestream declares. So, before any of them is called, the size a
frame's own header declares (JPEG and JPEG-LS start of frame, JPEG 2000 and HTJ2K SIZ) must equal
Rows x Columns x Samples per Pixel of the data set, its sample precision must fit in Bits
Allocated, RLE data must be able to expand to that size at all, and the decoded frame must fit
in the decode budget (``max_frame_bytes``, 1 GiB by default). A refusal is a
:class:`~dicomflow.errors.PixelSizeError` (a property of the data: no other decoder is tried);
reading the header never allocates more than the frame's own bytes.
"""

from __future__ import annotations

import numpy as np

from ..dicom import TransferSyntax
from ..errors import PixelDataError, PixelSizeError
from ._format import PixelFormat
from ._headers import j2k_header, jpeg_header

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "check_frame", "codec_failed", "codestream_info"]

#: one frame's encoded bytes, as the readers hand them over
FrameBytes = bytes | bytearray | memoryview | np.ndarray
#: The decode budget: decoded bytes one frame may have unless the caller allows more.
DEFAULT_MAX_FRAME_BYTES = 1 << 30


def codec_failed(exc: BaseException) -> bool:
    """Whether an exception out of a codec call is the codec failing on this data (then the
    next codec is tried, or the frame is refused): any ``Exception``, and the ``BaseException``
    a Rust codec raises when it panics (pyo3's ``PanicException``: pylibjpeg-rle's on a crafted
    RLE frame, "index out of bounds", ended the process); never an interrupt or an exit."""
    return not isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit)


def codestream_info(data: FrameBytes, syntax: TransferSyntax) -> dict | None:
    """The header fields of a JPEG-family or JPEG 2000 frame (``{}``: none found; ``None``: the
    syntax has no header this module reads)."""
    if syntax.codestream in ("jpeg", "jpeg-ls"):
        return jpeg_header(data if isinstance(data, bytes) else bytes(data))
    if syntax.codestream == "jpeg2000":
        return j2k_header(bytes(data[: 4096 + 64]))  # the SIZ segment is searched there
    return None


def _rle(data: FrameBytes, fmt: PixelFormat) -> None:
    # a 2-byte run decodes to at most 128 bytes: a forged Rows x Columns cannot fit
    nbytes = max(fmt.bits_allocated // 8, 1)
    segments = fmt.samples_per_pixel * nbytes
    per_segment = fmt.rows * fmt.columns
    if fmt.bits_allocated == 1:
        per_segment = (per_segment + 7) // 8
    if per_segment * segments > 64 * len(data) + 128 * segments:
        raise PixelSizeError(
            f"{len(data)} bytes of RLE cannot decode to {fmt.rows} x {fmt.columns} pixels"
        )


def check_frame(
    data: FrameBytes,
    fmt: PixelFormat,
    syntax: TransferSyntax,
    max_frame_bytes: int | None = None,
) -> None:
    """Refuse a frame whose decoded size is not what the data set declares, or too large.

    Raises
    ------
    PixelSizeError
        The codestream declares another size or more bits than Bits Allocated, RLE data too
        short for the declared size, or more decoded bytes than ``max_frame_bytes``.
    PixelDataError
        A JPEG-family or JPEG 2000 frame without a header to check.
    """
    _check_codestream(data, fmt, syntax)
    budget = DEFAULT_MAX_FRAME_BYTES if max_frame_bytes is None else int(max_frame_bytes)
    if fmt.frame_nbytes > budget:
        raise PixelSizeError(
            f"a frame of {fmt.rows} x {fmt.columns} x {fmt.samples_per_pixel} samples of "
            f"{fmt.dtype.itemsize} bytes decodes to {fmt.frame_nbytes:,} bytes, more than the "
            f"decode budget of {budget:,} bytes (max_frame_bytes)"
        )


def _check_codestream(data: FrameBytes, fmt: PixelFormat, syntax: TransferSyntax) -> None:
    if syntax.codestream == "rle":
        _rle(data, fmt)
        return
    info = codestream_info(data, syntax)
    if info is None:
        return
    if not info:
        marker = "start-of-frame" if syntax.codestream != "jpeg2000" else "SIZ"
        raise PixelDataError(
            f"no valid {syntax.codestream.upper()} {marker} marker: the frame's size cannot be "
            "checked"
        )
    declared = (info["rows"], info["columns"], info["components"])
    if declared != (fmt.rows, fmt.columns, fmt.samples_per_pixel):
        raise PixelSizeError(
            f"codestream is {info['rows']} x {info['columns']} x {info['components']} but the "
            f"header declares {fmt.rows} x {fmt.columns} x {fmt.samples_per_pixel}"
        )
    if info["precision"] > max(fmt.bits_allocated, 8):
        raise PixelSizeError(
            f"codestream samples have {info['precision']} bits, more than Bits Allocated "
            f"{fmt.bits_allocated}"
        )
