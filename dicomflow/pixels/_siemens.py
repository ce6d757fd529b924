"""Siemens mosaics: the CSA header fields that say how to cut a mosaic into slices.

A mosaic stores the N slices of one volume as tiles of one image, left to right and top to
bottom, on a square grid of ``ceil(sqrt(N))`` tiles per side (of ``Rows // per side`` pixels:
any remainder is unused). Image Position (Patient) is that of
the whole mosaic's first pixel; the first slice's position is found by moving to the corner of
the first tile (half the difference between mosaic and tile size, in each in-plane direction).
The slice order follows the CSA ``SliceNormalVector``.

The CSA header (private element (0029,xx10) of creator ``SIEMENS CSA HEADER``) is a list of
named fields: an optional ``SV10`` + 4-byte signature, the number of fields, then for each field
a 64-byte name, VM, a 4-byte VR, a type code, the item count and a check value, followed by its
items (a 16-byte item header whose second word is the length, then the value padded to 4 bytes).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

__all__ = ["MosaicInfo", "mosaic_info", "parse_csa"]


def parse_csa(raw: bytes) -> dict[str, list[str]]:
    """Fields of a CSA header as ``name -> list of item strings`` (empty items dropped)."""
    fields: dict[str, list[str]] = {}
    if not raw:
        return fields
    pos = 8 if raw[:4] == b"SV10" else 0
    if len(raw) < pos + 8:
        return fields
    (count,) = struct.unpack_from("<I", raw, pos)
    pos += 8
    if count > 1000:
        return fields
    size = len(raw)
    for _ in range(count):
        if pos + 84 > size:
            break
        name = raw[pos : pos + 64].split(b"\x00", 1)[0].decode("latin-1")
        (items,) = struct.unpack_from("<i", raw, pos + 76)
        pos += 84
        values = []
        if items < 0 or items > 10000:
            return fields
        for _ in range(items):
            if pos + 16 > size:
                return fields  # truncated: keep only the fields read whole
            length = struct.unpack_from("<i", raw, pos + 4)[0]
            pos += 16
            if length < 0 or pos + length > size:
                return fields
            value = raw[pos : pos + length].split(b"\x00", 1)[0].decode("latin-1").strip()
            if value:
                values.append(value)
            pos += (length + 3) // 4 * 4
        fields[name] = values
    return fields


@dataclass(frozen=True)
class MosaicInfo:
    """How to cut one mosaic into slices.

    Parameters
    ----------
    count : int
        Number of slices (tiles holding data).
    tile_rows, tile_columns : int
        Size of one tile.
    per_side : int
        Tiles per mosaic row.
    normal : (3,) array
        Direction (LPS) of increasing slice index.
    slice_times : tuple of float
        Acquisition time of each slice relative to the volume start (ms), when known.
    """

    count: int
    tile_rows: int
    tile_columns: int
    per_side: int
    normal: np.ndarray
    slice_times: tuple[float, ...] = ()

    def first_position(self, position, orientation, pixel_spacing, rows: int, columns: int):
        """LPS position of the first slice's first pixel from the mosaic's Image Position."""
        iop = np.asarray(orientation, float)
        dr, dc = float(pixel_spacing[0]), float(pixel_spacing[1])
        shift = (
            iop[:3] * dc * (columns - self.tile_columns) / 2
            + iop[3:] * dr * (rows - self.tile_rows) / 2
        )
        return np.asarray(position, float) + shift

    def tiles(self, mosaic: np.ndarray) -> np.ndarray:
        """Cut a decoded mosaic ``(rows, columns[, samples])`` into ``(count, tr, tc[, s])``."""
        tr, tc, m = self.tile_rows, self.tile_columns, self.per_side
        out = np.empty((self.count, tr, tc, *mosaic.shape[2:]), mosaic.dtype)
        for i in range(self.count):
            r, c = divmod(i, m)
            out[i] = mosaic[r * tr : (r + 1) * tr, c * tc : (c + 1) * tc]
        return out


def mosaic_info(ds, rows: int, columns: int, orientation) -> MosaicInfo | None:
    """Mosaic layout of a Siemens header (a pydicom Dataset), or None when it is not a mosaic."""
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "MOSAIC" not in image_type:
        return None
    count = None
    try:
        block = ds.private_block(0x0019, "SIEMENS MR HEADER")
        if 0x0A in block:
            count = int(block[0x0A].value)
    except (KeyError, ValueError, TypeError):
        count = None
    csa: dict[str, list[str]] = {}
    try:
        block = ds.private_block(0x0029, "SIEMENS CSA HEADER")
        if 0x10 in block:
            csa = parse_csa(bytes(block[0x10].value))
    except (KeyError, ValueError, TypeError):
        csa = {}
    if count is None and csa.get("NumberOfImagesInMosaic"):
        count = int(float(csa["NumberOfImagesInMosaic"][0]))
    if not count or count < 1:
        return None
    per_side = math.ceil(math.sqrt(count))
    # tiles are cut from the top left corner; a mosaic larger than its grid of tiles (its size
    # not a multiple of the tiles per side) has unused pixels on the right and at the bottom
    # (before, such a mosaic was not split: it became a stack of mosaics)
    if rows < per_side or columns < per_side:
        return None
    normal = None
    if len(csa.get("SliceNormalVector", [])) == 3:
        normal = np.array([float(v) for v in csa["SliceNormalVector"]])
    if normal is None or not np.all(np.isfinite(normal)) or np.linalg.norm(normal) < 1e-6:
        iop = np.asarray(orientation, float)
        normal = np.cross(iop[:3], iop[3:])
    normal = normal / np.linalg.norm(normal)
    times = tuple(float(v) for v in csa.get("MosaicRefAcqTimes", [])[:count])
    return MosaicInfo(count, rows // per_side, columns // per_side, per_side, normal, times)
