"""NIfTI-1 output of a :class:`dicomflow.Volume`, laid out as dcm2niix writes it.

The voxel array is ``[column, rows - 1 - row, slice(, time)]`` with a RAS affine in both the
sform and, when the grid is not sheared, the qform. Stored values are written as they are in
DICOM, with Rescale Slope/Intercept in ``scl_slope``/``scl_inter`` when every slice shares them,
else rescaled to float32; as dcm2niix, unsigned data of at most 15 bits is stored as int16 and
Philips data with its precise scaling (``_bids.nifti_storage``). Because NIfTI's x-fastest
order is the C order of the volume's ``[(time,) slice, row, column]`` array, every block of
slices a dask task decodes is written straight to its own place in the file (``.nii``), or
streamed in order through gzip level 1
(``.nii.gz``, the next batch decoded while this one is compressed). The file is written under a
temporary name and renamed, so a reader never sees a partial one.

Colour volumes (RGB, and YBR decoded to RGB as pydicom does) are written as dcm2niix writes
them: NIfTI datatype ``RGB24`` (128), each voxel an R, G, B byte triplet, with the same layout and
affine as a grey volume. NIfTI has no colour type with more than 8 bits per sample, so 16-bit
colour is refused (as dcm2niix refuses it); such volumes go to Zarr.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dicom import atomic_path
from ..errors import ConfigError
from ._bids import bids_sidecar, int16_mask, masked, nifti_storage, write_diffusion

if TYPE_CHECKING:
    from ._volume import Volume

__all__ = ["RGB24", "bids_sidecar", "nifti_bytes", "nifti_header", "nifti_layout", "write_nifti"]

_VOX_OFFSET = 352
#: NIfTI datatype 128 (``DT_RGB24``) as numpy sees it: one R, G, B byte triplet per voxel.
RGB24 = np.dtype([("R", "u1"), ("G", "u1"), ("B", "u1")])


def _plane_scales(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    slopes = np.array([p.slope for p in volume.planes], float)
    intercepts = np.array([p.intercept for p in volume.planes], float)
    return slopes, intercepts


def _sheared(affine: np.ndarray) -> bool:
    m = affine[:3, :3]
    cols = m / np.linalg.norm(m, axis=0)
    return bool(np.max(np.abs(cols.T @ cols - np.eye(3))) > 1e-4)


def wants_reorientation(volume: Volume) -> bool:
    """dcm2niix's default: 3-D (non-EPI) MR acquisitions are stored closest to RAS."""
    info = volume.info
    if str(info.get("MRAcquisitionType") or "").upper() != "3D":
        return False
    if str(info.get("EchoPlanarPulseSequence") or "").upper() == "YES":
        return False
    scanning = str(info.get("ScanningSequence") or "").upper().replace("\\", " ").split()
    return "EP" not in scanning and "EPI" not in str(info.get("SequenceName") or "").upper()


def nifti_layout(volume: Volume, reorient: bool | str = "auto"):
    """The volume as a dask array in NIfTI order (C-order ``[(t,) z, y, x]``) and its RAS affine.

    Rows are flipped as dcm2niix does. ``reorient=True`` (or ``"auto"`` for 3-D MR
    acquisitions, as dcm2niix) permutes and flips axes losslessly to the closest RAS layout.
    """
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    arr = volume.array[..., ::-1, :]
    affine = pixel_affine(volume)
    if reorient == "auto":
        reorient = wants_reorientation(volume)
    if not reorient or volume.grid is None:
        return arr, affine
    spatial = arr.shape[-3:][::-1]  # (x, y, z)
    # ornt[i] = (new axis of NIfTI axis i, flip); NIfTI axis i is array axis ndim - 1 - i
    ornt = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
    for i, (_, flip) in enumerate(ornt):
        if flip < 0:
            index = [slice(None)] * arr.ndim
            index[arr.ndim - 1 - i] = slice(None, None, -1)
            arr = arr[tuple(index)]
    source = np.argsort(ornt[:, 0])  # source[j]: the NIfTI axis that becomes axis j
    lead = arr.ndim - 3
    arr = arr.transpose(*range(lead), *(arr.ndim - 1 - int(source[j]) for j in (2, 1, 0)))
    affine = affine @ inv_ornt_aff(ornt, spatial)
    return arr, affine


def pixel_affine(volume: Volume) -> np.ndarray:
    """The NIfTI affine, or only the voxel size when the volume has no patient geometry."""
    if volume.grid is not None:
        return volume.nifti_affine
    dr, dc = volume.planes[0].pixel_spacing or (1.0, 1.0)
    return np.diag([float(dc), float(dr), 1.0, 1.0])


def nifti_header(volume: Volume, dtype: np.dtype, scale: tuple[float, float] | None, affine, shape):
    """A nibabel ``Nifti1Header`` for data of C-order ``shape`` stored as ``dtype``."""
    import nibabel as nib

    dims = tuple(int(n) for n in shape[::-1])
    header = nib.Nifti1Header()
    header.set_data_dtype(128 if np.dtype(dtype) == RGB24 else dtype)
    header.set_data_shape(dims)
    if volume.grid is None:  # NIfTI code 0: no orientation known, the voxel size only
        header.set_sform(affine, code=0)
        header.set_qform(affine, code=0)
    elif _sheared(affine):
        header.set_sform(affine, code=1)
        header.set_qform(None, code=0)  # a qform cannot hold a shear: leave it unset
    else:
        header.set_sform(affine, code=1)
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


def _sidecar_path(path: Path) -> Path:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def _rgb24_block(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block).view(RGB24)[..., 0]


def _colour_voxels(volume: Volume):
    """A colour volume's ``(..., 3)`` uint8 array as RGB24 voxels (the samples axis folded in)."""
    fmt = volume.planes[0].ref.fmt
    arr = volume.array
    photometric = fmt.photometric_interpretation
    if photometric.startswith("YBR") and not volume.options.as_rgb:
        raise ConfigError(
            f"{volume.planes[0].ref.uri}: {photometric} samples kept as YBR "
            "(PixelOptions(as_rgb=False)) cannot be written as NIfTI RGB24; build the volumes "
            "with as_rgb=True"
        )
    if arr.dtype != np.uint8 or arr.shape[-1] != 3:
        raise ConfigError(
            f"{volume.planes[0].ref.uri}: NIfTI stores colour only as RGB24 (3 samples of 8 bits);"
            f" this volume has {arr.shape[-1]} samples of {arr.dtype} (dcm2niix refuses it too):"
            " write it as Zarr instead"
        )
    arr = arr.rechunk({arr.ndim - 1: 3})
    return arr.map_blocks(_rgb24_block, drop_axis=arr.ndim - 1, dtype=RGB24)


def _voxels(volume: Volume):
    """The array to store, its NIfTI dtype and ``(scl_slope, scl_inter)`` (None: not scaled)."""
    arr = volume.array
    if volume.planes[0].ref.fmt.samples_per_pixel > 1:
        return _colour_voxels(volume), RGB24, None
    dtype = np.dtype(arr.dtype)
    scale = None
    if dtype.kind in "iu":
        rescale = volume.rescale
        if rescale is None:  # slices scaled differently: store real values
            slopes, intercepts = _plane_scales(volume)
            if int(np.prod(arr.shape[:-2])) != len(volume.sop_instance_uids):
                raise ConfigError(
                    "slices scaled differently cannot be written from a resampled volume; "
                    "build the volumes with PixelOptions(modality_lut=True)"
                )
            per = arr.reshape((len(volume.planes), -1, *arr.shape[-2:]))
            arr = (
                per.astype(np.float32) * slopes[:, None, None, None].astype(np.float32)
                + intercepts[:, None, None, None].astype(np.float32)
            ).reshape(arr.shape)
            dtype = np.dtype(np.float32)
        elif rescale != (1.0, 0.0):
            scale = rescale
        if dtype.kind in "iu":
            dtype, scale = nifti_storage(volume, dtype, scale)  # as dcm2niix: int16, Philips
            mask = int16_mask(volume, dtype)  # int16: the bits above Bits Stored cleared
            if mask is not None:
                arr = arr.map_blocks(masked, mask, dtype=arr.dtype)  # type: ignore[arg-type]
    return arr, dtype, scale


def _layout_parts(volume: Volume, reorient: bool | str) -> tuple[bytes, Any, np.dtype]:
    """The header bytes (padded to the voxel offset), the voxels as a dask array of slices in
    file order ``(slices, y, x)``, and their on-disk (little endian) dtype."""
    arr, dtype, scale = _voxels(volume)
    shadow = replace(volume, array=arr)
    flipped, affine = nifti_layout(shadow, reorient)
    header = nifti_header(volume, dtype, scale, affine, flipped.shape)
    head = header.binaryblock + b"\x00" * (_VOX_OFFSET - len(header.binaryblock))
    lead = flipped.reshape((-1, *flipped.shape[-2:]))
    return head, lead, dtype.newbyteorder("<")


def _nifti_stream(
    volume: Volume,
    *,
    reorient: bool | str,
    batch: int,
    compute: dict[str, Any],
) -> Iterator[bytes | memoryview]:
    """The NIfTI-1 file (uncompressed) in pieces: the header, then batches of slices.

    The next batch is decoded (dask threads) while the caller writes this one.
    """
    head, lead, little = _layout_parts(volume, reorient)
    yield head

    def block(first: int) -> np.ndarray:
        return lead[first : first + batch].compute(**compute)

    with ThreadPoolExecutor(1) as prefetch:
        pending: Future[np.ndarray] | None = None
        for start in range(0, lead.shape[0], batch):
            current = pending.result() if pending else block(start)
            following = start + batch
            pending = prefetch.submit(block, following) if following < lead.shape[0] else None
            data = np.ascontiguousarray(current, dtype=little).reshape(-1)
            yield data.view(np.uint8).data


class _SlabWriter:
    """A ``dask.array.store`` target: each computed block of whole slices is written at its
    own place in the open file (``pwrite``, the GIL released), so slices go from the decoder to
    the file with no concatenation and no ordering between blocks."""

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.fd, self.offset, self.dtype = fd, offset, dtype
        self.shape = shape
        self.ndim = len(shape)
        self.slice_bytes = int(np.prod(shape[1:])) * dtype.itemsize

    def __setitem__(self, key: tuple[slice, ...], value: np.ndarray) -> None:
        first = key[0].start or 0
        data = np.ascontiguousarray(value, dtype=self.dtype).reshape(-1).view(np.uint8)
        view, position = data.data, self.offset + first * self.slice_bytes
        while view.nbytes:
            written = os.pwrite(self.fd, view, position)
            view, position = view[written:], position + written


def _frames_directly(volume: Volume, reorient: bool | str, stored: np.dtype) -> bool:
    """Whether the file's slices (of ``stored`` voxels) are the planes' frames in order, each
    only row-flipped: then frames are read and written by a thread pool, without building and
    scheduling a dask graph (several times faster for a few hundred slices)."""
    if not volume.stacked:
        return False
    if reorient == "auto":
        reorient = wants_reorientation(volume)
    if reorient and volume.grid is not None:
        return False
    # not rescaled to float32 plane by plane on the way (an integer of the same size is a cast)
    source = volume.array.dtype
    same_size = stored.kind in "iu" and source.kind in "iu" and stored.itemsize == source.itemsize
    return stored == RGB24 or stored == source.newbyteorder("<") or same_size


def _threads(compute: dict[str, Any]) -> int:
    if compute.get("scheduler") in ("sync", "synchronous", "single-threaded"):
        return 1
    return int(compute.get("num_workers") or os.cpu_count() or 1)


def _write_frames(volume: Volume, target: _SlabWriter, threads: int) -> None:
    from ._frames import load_frame

    options, planes, dtype = volume.options, volume.planes, volume.array.dtype
    colour = target.dtype == RGB24
    mask = int16_mask(volume, target.dtype)  # as in _voxels

    def one(index: int) -> None:
        plane = planes[index]
        frame = load_frame(plane.ref, options, plane.transform(options), volume.storage_options)
        frame = frame.astype(dtype, copy=False)[::-1]  # NIfTI rows run the other way
        block = _rgb24_block(frame) if colour else masked(frame, mask)
        target[(slice(index, index + 1),)] = block[np.newaxis]

    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(one, range(len(planes))):
            pass


def _write_uncompressed(
    volume: Volume, tmp: Path, reorient: bool | str, compute: dict[str, Any]
) -> None:
    """Write the ``.nii`` at ``tmp``: the header, then every block of slices where it belongs."""
    import dask.array as da

    head, lead, little = _layout_parts(volume, reorient)  # fails before any file when it must
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.pwrite(fd, head, 0)
        os.ftruncate(fd, len(head) + lead.size * little.itemsize)
        target = _SlabWriter(fd, len(head), lead.shape, little)
        if _frames_directly(volume, reorient, little) and lead.shape[0] == len(volume.planes):
            _write_frames(volume, target, _threads(compute))
        else:
            lead = lead.rechunk({1: -1, 2: -1})  # blocks of whole slices: contiguous in the file
            da.store(lead, target, lock=False, **compute)  # type: ignore[arg-type]
    finally:
        os.close(fd)


def _compute_options(scheduler: str | None, num_workers: int | None) -> dict[str, Any]:
    compute: dict[str, Any] = {"scheduler": scheduler}
    if num_workers:
        compute["num_workers"] = num_workers
    return compute


def write_nifti(
    volume: Volume,
    path,
    *,
    sidecar: bool = True,
    reorient: bool | str = "auto",
    batch: int = 64,
    scheduler: str | None = "threads",
    num_workers: int | None = None,
) -> Path:
    """Write ``volume`` as NIfTI-1 (``.nii`` or ``.nii.gz``) and, by default, a JSON sidecar.

    Grey volumes keep their stored values (with ``scl_slope``/``scl_inter``); colour volumes
    with 8-bit samples are written as RGB24, as dcm2niix writes them.

    Parameters
    ----------
    volume : Volume
        The volume to write.
    path : str or Path
        Output file; ``.nii.gz`` is gzip-compressed.
    sidecar : bool
        Also write ``<name>.json`` (BIDS-style metadata, provenance, geometry warnings).
    reorient : bool or "auto"
        Permute/flip axes losslessly to the layout closest to RAS; ``"auto"`` does it for 3-D
        MR acquisitions only, as dcm2niix does. Rows are always flipped (dcm2niix's layout).
    batch : int
        Slices decoded per step when compressing.
    scheduler, num_workers
        Passed to dask when decoding.

    Returns
    -------
    Path
        The NIfTI file written.

    Raises
    ------
    ConfigError
        A colour volume NIfTI cannot hold (more than 8 bits per sample, or kept as YBR).
    PixelDataError
        A frame that cannot be read or decoded (:class:`~dicomflow.FrameDecodeError` names the
        file and frame).

    Examples
    --------
    >>> vol.to_nifti("sub-01_ct.nii.gz")    # doctest: +SKIP
    """
    path = Path(path)
    compute = _compute_options(scheduler, num_workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as name:  # written beside, then renamed: never a partial file
        tmp = Path(name)
        if path.name.endswith(".gz"):
            pieces = _nifti_stream(volume, reorient=reorient, batch=batch, compute=compute)
            first = next(pieces)  # the header: a volume NIfTI cannot hold fails here
            with open(tmp, "xb") as raw, gzip.GzipFile("", "wb", 1, raw, mtime=0) as f:
                f.write(first)  # no name and no time in the gzip header: reproducible
                for piece in pieces:
                    f.write(piece)
        else:
            _write_uncompressed(volume, tmp, reorient, compute)
        if sidecar:
            with atomic_path(_sidecar_path(path)) as side_tmp:
                car = bids_sidecar(volume, reorient=reorient)
                Path(side_tmp).write_text(json.dumps(car, indent=2))
            write_diffusion(volume, path, reorient=reorient)  # .bval/.bvec of diffusion data
    return path


def nifti_bytes(
    volume: Volume,
    *,
    compress: bool = True,
    reorient: bool | str = "auto",
    batch: int = 64,
    scheduler: str | None = "threads",
    num_workers: int | None = None,
) -> bytes:
    """The NIfTI-1 file :func:`write_nifti` writes, as bytes (for atomic writes and objects).

    Compressed output is reproducible: the gzip header holds no name and no time, so the same
    volume always gives the same bytes.

    Parameters
    ----------
    volume : Volume
        The volume.
    compress : bool
        gzip the file (``.nii.gz``), level 1 as :func:`write_nifti`.
    reorient, batch, scheduler, num_workers
        As in :func:`write_nifti`.

    Returns
    -------
    bytes
        The whole ``.nii`` (or ``.nii.gz``) file.

    Examples
    --------
    >>> data = nifti_bytes(vol, compress=False)     # doctest: +SKIP
    >>> nibabel.Nifti1Image.from_bytes(data).shape  # doctest: +SKIP
    (512, 512, 120)
    """
    compute = _compute_options(scheduler, num_workers)
    raw = b"".join(_nifti_stream(volume, reorient=reorient, batch=batch, compute=compute))
    return gzip.compress(raw, compresslevel=1, mtime=0) if compress else raw
