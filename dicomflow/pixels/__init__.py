"""Pixels: lazy frames from catalog rows, volumes with verified geometry, and their exports.

::

    import dicomflow as dfl
    cat = dfl.scan("study/").to_polars()
    arr = dfl.frames(cat.head(1))     # dask: one chunk per frame, nothing read yet
    vols = dfl.volumes(cat)           # series -> stacks -> sorted along the normal, 3-D or 4-D
    vols.to_polars()                  # the geometry report: one row per volume
    vols.series_report                # one row per series: found/expected slices, decision
    vols[0].to_nifti("ct.nii.gz"); vols[0].to_zarr("ct.zarr"); vols[0].to_xarray()

Modules: ``_locate`` (where each frame's bytes are), ``_frames`` (the dask array; frames are
decoded by :mod:`dicomflow.codecs`, which also holds the ``PixelFormat`` description),
``_slices`` (rows to image planes: functional groups, mosaics), ``_geometry`` (sorting,
spacing, tilt, affines), ``_stacks`` (grouping into volumes), ``_volume`` (the ``Volume`` and
its report), ``_report`` (the report per series), ``_resample`` (tilt and spacing correction),
``_siemens`` (CSA header, mosaics).
The volume formats (``_nifti``, ``_zarr``, ``_preview``: NIfTI-1, OME-Zarr, PNG) live here, with
``_bids`` (dcm2niix's sidecar keys, ``.bval``/``.bvec``, data type and scaling, output names);
the per-instance sinks built on them live in ``dicomflow.writers``.

Errors (all ``DicomflowError`` and ``ValueError``): ``PixelDataError`` at the root,
``PixelSizeError`` (declared sizes exceed the bytes present), ``FrameDecodeError`` (names the
file and frame), ``GeometryError`` (no consistent geometry).
"""

from __future__ import annotations

from ..codecs import PixelFormat, available_backends
from ._bids import (
    diffusion_table,
    name_from_template,
    template_fields,
    unique_names,
    write_diffusion,
)
from ._errors import FrameDecodeError, GeometryError, PixelDataError, PixelSizeError
from ._frames import (
    FrameTransform,
    PixelOptions,
    frames,
    load_frame,
    locate_frames,
    palette_of,
    read_range,
    row_refs,
)
from ._geometry import Grid, analyse_stack, normal_of
from ._locate import FrameRef, unwrap_fragments
from ._montage import montage
from ._nifti import RGB24, bids_sidecar, nifti_bytes, write_nifti
from ._preview import PRESETS, apply_window, display_frame, write_png
from ._report import LOCALIZER_DROPPED, SERIES_SCHEMA
from ._resample import shift_image
from ._siemens import parse_csa
from ._slices import NO_PIXEL_DATA, planes_from_rows, read_header
from ._stacks import volumes
from ._volume import Volume, Volumes
from ._zarr import write_zarr

__all__ = [
    "LOCALIZER_DROPPED",
    "NO_PIXEL_DATA",
    "PRESETS",
    "RGB24",
    "SERIES_SCHEMA",
    "FrameDecodeError",
    "FrameRef",
    "FrameTransform",
    "GeometryError",
    "Grid",
    "PixelDataError",
    "PixelFormat",
    "PixelOptions",
    "PixelSizeError",
    "Volume",
    "Volumes",
    "analyse_stack",
    "apply_window",
    "available_backends",
    "bids_sidecar",
    "diffusion_table",
    "display_frame",
    "frames",
    "load_frame",
    "locate_frames",
    "montage",
    "name_from_template",
    "nifti_bytes",
    "normal_of",
    "palette_of",
    "parse_csa",
    "planes_from_rows",
    "read_range",
    "read_header",
    "row_refs",
    "shift_image",
    "template_fields",
    "unique_names",
    "unwrap_fragments",
    "volumes",
    "write_diffusion",
    "write_nifti",
    "write_png",
    "write_zarr",
]
