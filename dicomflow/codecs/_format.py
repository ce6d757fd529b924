"""What the pixel data of one object looks like: the Image Pixel module as a frozen value.

Its transfer syntax facts (encapsulated, deflated, byte order) come from the transfer syntax
table of :mod:`dicomflow.dicom`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from math import ceil
from typing import Any

import numpy as np

from ..dicom import TRANSFER_SYNTAXES, TransferSyntax
from ..errors import PixelDataError

__all__ = ["PixelFormat"]

_FLOAT_KEYWORDS: dict[str, np.dtype] = {
    "FloatPixelData": np.dtype("float32"),
    "DoubleFloatPixelData": np.dtype("float64"),
}


@cache
def _dtype(keyword: str, bits_allocated: int, pixel_representation: int) -> np.dtype:
    if keyword in _FLOAT_KEYWORDS:
        return _FLOAT_KEYWORDS[keyword]
    if bits_allocated == 1:
        return np.dtype("u1")
    kind = "i" if pixel_representation else "u"
    return np.dtype(f"{kind}{bits_allocated // 8}")


def _int(row: Mapping[str, Any], key: str, default: int | None) -> int | None:
    value = row.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """The Image Pixel description of one object, enough to locate and decode its frames.

    Parameters
    ----------
    transfer_syntax_uid : str
        Transfer Syntax UID of the object.
    rows, columns : int
        Rows and Columns.
    samples_per_pixel : int
        Samples per Pixel (1 or 3).
    bits_allocated, bits_stored : int
        Bits Allocated and Bits Stored.
    pixel_representation : int
        0 unsigned, 1 two's complement.
    planar_configuration : int
        0 colour-by-pixel, 1 colour-by-plane (native and RLE only).
    photometric_interpretation : str
        MONOCHROME1, MONOCHROME2, RGB, YBR_FULL, YBR_FULL_422, PALETTE COLOR, ...
    number_of_frames : int
        Number of Frames (1 when absent).
    pixel_keyword : str
        ``PixelData``, ``FloatPixelData`` or ``DoubleFloatPixelData``.

    Examples
    --------
    >>> fmt = PixelFormat("1.2.840.10008.1.2.1", rows=2, columns=3)
    >>> fmt.frame_shape, fmt.dtype.str, fmt.frame_nbytes
    ((2, 3), '<u2', 12)
    """

    transfer_syntax_uid: str
    rows: int
    columns: int
    samples_per_pixel: int = 1
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    planar_configuration: int = 0
    photometric_interpretation: str = "MONOCHROME2"
    number_of_frames: int = 1
    pixel_keyword: str = "PixelData"

    def __post_init__(self) -> None:
        problems = []
        if not (0 < self.rows < 2**16 and 0 < self.columns < 2**16):
            problems.append(f"Rows x Columns {self.rows} x {self.columns}")
        if self.samples_per_pixel not in (1, 3, 4):
            problems.append(f"Samples per Pixel {self.samples_per_pixel}")
        if self.bits_allocated not in (1, 8, 16, 32, 64):
            problems.append(f"Bits Allocated {self.bits_allocated}")
        if not 0 < self.bits_stored <= self.bits_allocated:
            problems.append(
                f"Bits Stored {self.bits_stored} (Bits Allocated {self.bits_allocated})"
            )
        if self.pixel_representation not in (0, 1):
            problems.append(f"Pixel Representation {self.pixel_representation}")
        if self.number_of_frames < 1:
            problems.append(f"Number of Frames {self.number_of_frames}")
        if self.pixel_keyword in _FLOAT_KEYWORDS and self.bits_allocated not in (32, 64):
            problems.append(f"{self.pixel_keyword} with Bits Allocated {self.bits_allocated}")
        if problems:
            raise PixelDataError("invalid Image Pixel description: " + ", ".join(problems))

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> PixelFormat:
        """Build the description from one catalog row (a mapping of column name to value).

        Float Pixel Data is recognised from its module: Bits Allocated 32 or 64 with neither
        Bits Stored nor Pixel Representation present, or a ``pixel_keyword`` column.
        """
        bits_allocated = _int(row, "BitsAllocated", None)
        rows = _int(row, "Rows", None)
        columns = _int(row, "Columns", None)
        if bits_allocated is None or rows is None or columns is None:
            raise PixelDataError(
                f"{row.get('uri')}: no Rows, Columns or Bits Allocated: not an image"
            )
        keyword = row.get("pixel_keyword") or "PixelData"
        if (
            keyword == "PixelData"
            and bits_allocated in (32, 64)
            and row.get("BitsStored") is None
            and row.get("PixelRepresentation") is None
        ):
            keyword = "FloatPixelData" if bits_allocated == 32 else "DoubleFloatPixelData"
        photometric = row.get("PhotometricInterpretation") or "MONOCHROME2"
        bits_stored = _int(row, "BitsStored", bits_allocated)
        if bits_stored is None or bits_stored <= 0 or bits_stored > bits_allocated:
            bits_stored = bits_allocated
        frames = _int(row, "number_of_frames", None) or _int(row, "NumberOfFrames", 1) or 1
        try:
            return cls(
                transfer_syntax_uid=str(row.get("transfer_syntax_uid") or "1.2.840.10008.1.2"),
                rows=rows,
                columns=columns,
                samples_per_pixel=_int(row, "SamplesPerPixel", 1) or 1,
                bits_allocated=bits_allocated,
                bits_stored=bits_stored,
                pixel_representation=_int(row, "PixelRepresentation", 0) or 0,
                planar_configuration=_int(row, "PlanarConfiguration", 0) or 0,
                photometric_interpretation=str(photometric).strip().upper(),
                number_of_frames=max(frames, 1),
                pixel_keyword=str(keyword),
            )
        except PixelDataError as exc:
            exc.add_note(f"file: {row.get('uri')}")
            raise

    # -- transfer syntax ---------------------------------------------------------------------
    @property
    def syntax(self) -> TransferSyntax | None:
        """The transfer syntax record (``None`` for a UID the table does not know)."""
        return TRANSFER_SYNTAXES.get(self.transfer_syntax_uid)

    @property
    def is_encapsulated(self) -> bool:
        """Whether frames are stored as encapsulated fragments (an unknown syntax: not)."""
        syntax = self.syntax
        return syntax is not None and syntax.is_encapsulated

    @property
    def is_deflated(self) -> bool:
        """Whether the whole data set is deflated (no byte offsets into the file)."""
        syntax = self.syntax
        return syntax is not None and syntax.deflated

    @property
    def is_little_endian(self) -> bool:
        """Byte order of native pixel data (an unknown syntax: little endian)."""
        syntax = self.syntax
        return syntax is None or syntax.is_little_endian

    def describe(self) -> str:
        """The image in words, for messages.

        >>> PixelFormat("1.2.840.10008.1.2.1", rows=2, columns=3).describe()
        'MONOCHROME2, 1 sample(s), Bits Allocated 16, Bits Stored 16, unsigned'
        """
        sign = "signed" if self.pixel_representation else "unsigned"
        return (
            f"{self.photometric_interpretation}, {self.samples_per_pixel} sample(s), Bits "
            f"Allocated {self.bits_allocated}, Bits Stored {self.bits_stored}, {sign}"
        )

    # -- sizes -------------------------------------------------------------------------------
    @property
    def frame_pixels(self) -> int:
        """Samples in one decoded frame (rows x columns x samples)."""
        return self.rows * self.columns * self.samples_per_pixel

    @property
    def frame_bits(self) -> int:
        """Bits one frame occupies when stored natively."""
        samples = self.frame_pixels
        if self.photometric_interpretation == "YBR_FULL_422" and self.samples_per_pixel == 3:
            samples = samples // 3 * 2  # two chroma samples shared by each pair of pixels
        return samples * self.bits_allocated

    @property
    def frame_nbytes(self) -> int:
        """Bytes of one decoded frame in :attr:`dtype`."""
        return self.frame_pixels * self.dtype.itemsize

    @property
    def native_nbytes(self) -> int:
        """Bytes all frames occupy when stored natively (no trailing padding)."""
        return ceil(self.frame_bits * self.number_of_frames / 8)

    # -- the decoded array -------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The dtype pydicom's ``pixel_array`` gives (native byte order)."""
        return _dtype(self.pixel_keyword, self.bits_allocated, self.pixel_representation)

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of one decoded frame: (rows, columns) or (rows, columns, samples)."""
        if self.samples_per_pixel == 1:
            return (self.rows, self.columns)
        return (self.rows, self.columns, self.samples_per_pixel)
