"""The pixel layer's exceptions; defined, with the whole tree, in :mod:`dicomflow.errors`.

Each error names the file (and frame) it is about, so a failed chunk of a dask array points at
the object to look at.
"""

from __future__ import annotations

from ..errors import FrameDecodeError, GeometryError, PixelDataError, PixelSizeError

__all__ = ["FrameDecodeError", "GeometryError", "PixelDataError", "PixelSizeError"]
