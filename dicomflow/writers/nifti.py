"""NIfTI-1 output of a :class:`dicomflow.Volume`, laid out as dcm2niix writes it.

The voxel array is ``[column, rows - 1 - row, slice(, time)]`` with a RAS affine in both the
sform and, when the grid is not sheared, the qform. Stored values are written as they are in
DICOM, with Rescale Slope/Intercept in ``scl_slope``/``scl_inter`` when every slice shares them,
else rescaled to float32. Because NIfTI's x-fastest order is the C order of the volume's
``[(time,) slice, row, column]`` array, slices stream to disk as they are decoded: an
uncompressed file is filled through a memory map by dask in parallel, a ``.nii.gz`` in batches.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..pixels import Volume

__all__ = ["bids_sidecar", "nifti_header", "write_nifti"]

_VOX_OFFSET = 352


def _plane_scales(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    slopes = np.array([p.slope for p in volume.planes], float)
    intercepts = np.array([p.intercept for p in volume.planes], float)
    return slopes, intercepts


def _sheared(affine: np.ndarray) -> bool:
    m = affine[:3, :3]
    cols = m / np.linalg.norm(m, axis=0)
    return bool(np.max(np.abs(cols.T @ cols - np.eye(3))) > 1e-4)


def nifti_header(volume: Volume, dtype: np.dtype, scale: tuple[float, float] | None):
    """A nibabel ``Nifti1Header`` for ``volume`` stored as ``dtype``."""
    import nibabel as nib

    shape = volume.shape
    if volume.planes[0].ref.fmt.samples_per_pixel > 1:
        raise NotImplementedError("colour volumes are written as Zarr or PNG, not NIfTI")
    spatial = shape[-3:]
    dims = (spatial[2], spatial[1], spatial[0], *((shape[0],) if volume.is_4d else ()))
    header = nib.Nifti1Header()
    header.set_data_dtype(dtype)
    header.set_data_shape(dims)
    affine = volume.nifti_affine
    header.set_sform(affine, code=1)
    if _sheared(affine):
        header.set_qform(None, code=0)  # a qform cannot hold a shear: leave it unset
    else:
        header.set_qform(affine, code=1)
    zooms = [float(np.linalg.norm(affine[:3, i])) for i in range(3)]
    if volume.is_4d:
        tr = volume.info.get("RepetitionTime")
        zooms.append(float(tr) / 1000.0 if tr else 1.0)
    header.set_zooms(zooms)
    header.set_xyzt_units("mm", "sec")
    header.set_dim_info(slice=2)
    if scale is not None:
        header["scl_slope"], header["scl_inter"] = scale
    header["descrip"] = b"dicomflow"
    header["vox_offset"] = _VOX_OFFSET
    return header


def bids_sidecar(volume: Volume) -> dict[str, Any]:
    """BIDS-style metadata of a volume (seconds for times, as BIDS asks)."""
    from .. import __version__

    info = volume.info
    out: dict[str, Any] = {}
    simple = (
        "Modality", "Manufacturer", "MagneticFieldStrength", "SeriesDescription",
        "ProtocolName", "BodyPartExamined", "PatientPosition", "ImageType", "SeriesNumber",
        "AcquisitionNumber", "SliceThickness", "SpacingBetweenSlices", "FlipAngle",
        "ConvolutionKernel", "KVP",
    )  # fmt: skip
    for key in simple:
        if info.get(key) is not None:
            out[key] = info[key]
    if info.get("ManufacturerModelName"):
        out["ManufacturersModelName"] = info["ManufacturerModelName"]
    if info.get("EchoTime") is not None:
        out["EchoTime"] = float(info["EchoTime"]) / 1000.0
    if info.get("RepetitionTime") is not None:
        out["RepetitionTime"] = float(info["RepetitionTime"]) / 1000.0
    if info.get("SliceTiming"):
        out["SliceTiming"] = info["SliceTiming"]
    if info.get("GantryDetectorTilt") is not None:
        out["GantryDetectorTilt"] = info["GantryDetectorTilt"]
    out["ImageOrientationPatientDICOM"] = info.get("orientation")
    out["SeriesInstanceUID"] = info.get("SeriesInstanceUID")
    out["SourceSOPInstanceUIDs"] = volume.sop_instance_uids
    out["GeometryWarnings"] = list(volume.warnings)
    out["ConversionSoftware"] = "dicomflow"
    out["ConversionSoftwareVersion"] = __version__
    return {k: _jsonable(v) for k, v in out.items() if v is not None}


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _sidecar_path(path: Path) -> Path:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def write_nifti(
    volume: Volume,
    path,
    *,
    sidecar: bool = True,
    batch: int = 64,
    scheduler: str | None = "threads",
    num_workers: int | None = None,
) -> Path:
    """Write ``volume`` as NIfTI-1 (``.nii`` or ``.nii.gz``) and, by default, a JSON sidecar.

    Parameters
    ----------
    volume : Volume
        The volume to write.
    path : str or Path
        Output file; ``.nii.gz`` is gzip-compressed.
    sidecar : bool
        Also write ``<name>.json`` (BIDS-style metadata, provenance, geometry warnings).
    batch : int
        Slices decoded per step when compressing.
    scheduler, num_workers
        Passed to dask when decoding.

    Returns
    -------
    Path
        The NIfTI file written.

    Examples
    --------
    >>> vol.to_nifti("sub-01_ct.nii.gz")    # doctest: +SKIP
    """
    import dask.array as da

    path = Path(path)
    arr = volume.array
    dtype = np.dtype(arr.dtype)
    scale = None
    if dtype.kind in "iu":
        rescale = volume.rescale
        if rescale is None:  # slices scaled differently: store real values
            slopes, intercepts = _plane_scales(volume)
            per = arr.reshape((len(volume.planes), -1, *arr.shape[-2:]))
            arr = (
                per.astype(np.float32) * slopes[:, None, None, None].astype(np.float32)
                + intercepts[:, None, None, None].astype(np.float32)
            ).reshape(arr.shape)
            dtype = np.dtype(np.float32)
        elif rescale != (1.0, 0.0):
            scale = rescale
    header = nifti_header(volume, dtype, scale)
    flipped = arr[..., ::-1, :]
    compute = {"scheduler": scheduler}
    if num_workers:
        compute["num_workers"] = num_workers
    path.parent.mkdir(parents=True, exist_ok=True)
    header_bytes = header.binaryblock + b"\x00" * (_VOX_OFFSET - len(header.binaryblock))
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(header_bytes)
            lead = flipped.reshape((-1, *flipped.shape[-2:]))
            for start in range(0, lead.shape[0], batch):
                block = lead[start : start + batch].compute(**compute)
                f.write(np.ascontiguousarray(block, dtype=dtype.newbyteorder("<")).tobytes())
    else:
        with open(path, "wb") as f:
            f.write(header_bytes)
            f.truncate(_VOX_OFFSET + int(np.prod(arr.shape)) * dtype.itemsize)
        target = np.memmap(
            path, dtype=dtype.newbyteorder("<"), mode="r+", offset=_VOX_OFFSET, shape=arr.shape
        )
        da.store(flipped.astype(target.dtype, copy=False), target, lock=False, **compute)
        target.flush()
        del target
    if sidecar:
        _sidecar_path(path).write_text(json.dumps(bids_sidecar(volume), indent=2))
    return path
