"""Pixels: lazy frames from catalog rows, volumes with verified geometry, and their exports.

::

    import dicomflow as dfl
    cat = dfl.scan("study/").to_polars()
    arr = dfl.frames(cat.head(1))     # dask: one chunk per frame, nothing read yet
    vols = dfl.volumes(cat)           # series -> stacks -> sorted along the normal, 3-D or 4-D
    vols.to_polars()                  # the geometry report: one row per volume
    vols[0].to_nifti("ct.nii.gz"); vols[0].to_zarr("ct.zarr"); vols[0].to_xarray()

Modules: ``_locate`` (where each frame's bytes are), ``_frames`` (the dask array; frames are
decoded by :mod:`dicomflow.codecs`, which also holds the ``PixelFormat`` description),
``_slices`` (rows to image planes: functional groups, mosaics), ``_geometry`` (sorting,
spacing, tilt, affines), ``_stacks`` (grouping into volumes), ``_volume`` (the ``Volume`` and
its report), ``_resample`` (tilt and spacing correction), ``_siemens`` (CSA header, mosaics).
Writers live in ``dicomflow.writers``.

Errors (all ``DicomflowError`` and ``ValueError``): ``PixelDataError`` at the root,
``PixelSizeError`` (declared sizes exceed the bytes present), ``FrameDecodeError`` (names the
file and frame), ``GeometryError`` (no consistent geometry).
"""

from __future__ import annotations

from ..codecs import PixelFormat, available_backends
from ._errors import FrameDecodeError, GeometryError, PixelDataError, PixelSizeError
from ._frames import PixelOptions, frames, locate_frames
from ._geometry import Grid
from ._stacks import volumes
from ._volume import Volume, Volumes

__all__ = [
    "FrameDecodeError",
    "GeometryError",
    "Grid",
    "PixelDataError",
    "PixelFormat",
    "PixelOptions",
    "PixelSizeError",
    "Volume",
    "Volumes",
    "available_backends",
    "frames",
    "locate_frames",
    "volumes",
]
