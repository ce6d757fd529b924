"""Zarr v3 output of a :class:`dicomflow.Volume`: compressed, chunked along slices, OME-NGFF.

Layout of the group::

    <path>/zarr.json       attributes: "ome" (NGFF 0.5 multiscales: axes in mm, scales) and
                           "dicomflow" (LPS affine, origin, direction, source SOP Instance UIDs
                           per slice, series UIDs, geometry warnings, report fields)
    <path>/0               the full-resolution array ((t,) z, y, x (, c)), one slice per chunk,
                           Blosc/Zstd-compressed, sharded along slices when the volume is big
    <path>/1, 2, ...       in-plane 2x downsampled levels when ``levels > 1``

NGFF transformations are scales and translations only: the oblique or sheared geometry lives
in the ``dicomflow`` attributes (the affine is the truth; the NGFF scale is its column norms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._volume import Volume

__all__ = ["write_zarr", "zarr_attributes"]

_SHARD_BYTES = 64 * 2**20  # volumes above this are sharded along slices


def _axes(volume: Volume) -> list[dict[str, str]]:
    axes = [
        {"name": "z", "type": "space", "unit": "millimeter"},
        {"name": "y", "type": "space", "unit": "millimeter"},
        {"name": "x", "type": "space", "unit": "millimeter"},
    ]
    if volume.is_4d:
        axes.insert(0, {"name": "t", "type": "time", "unit": "second"})
    if volume.array.ndim > len(axes):
        axes.append({"name": "c", "type": "channel"})
    return axes


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def zarr_attributes(volume: Volume, levels: int = 1) -> dict[str, Any]:
    """Group attributes: NGFF ``multiscales`` and dicomflow geometry and provenance."""
    spacing = list(volume.spacing or (1.0, 1.0, 1.0))
    axes = _axes(volume)
    datasets = []
    for level in range(levels):
        scale = [1.0] * len(axes)
        index = [a["name"] for a in axes].index("z")
        scale[index : index + 3] = [spacing[0], spacing[1] * 2**level, spacing[2] * 2**level]
        if volume.is_4d:
            tr = volume.info.get("RepetitionTime")
            scale[0] = float(tr) / 1000.0 if tr else 1.0
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    geometry: dict[str, Any] = {}
    if volume.grid is not None:
        geometry = {
            "affine_lps": volume.affine,
            "origin_lps": volume.grid.origin,
            "direction_lps": volume.grid.direction,
            "affine_convention": "maps (column, row, slice, 1) to LPS mm; array is [(t,) z, y, x]",
        }
    report = {k: v for k, v in volume.info.items() if k != "slice_distances"}
    return _jsonable(
        {
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {
                        "name": str(volume.info.get("SeriesDescription") or "volume"),
                        "axes": axes,
                        "datasets": datasets,
                    }
                ],
            },
            "dicomflow": {
                **geometry,
                "series_instance_uid": volume.info.get("SeriesInstanceUID"),
                "study_instance_uid": volume.info.get("StudyInstanceUID"),
                "source_sop_instance_uids": volume.sop_instance_uids,
                "source_uris": [p.ref.uri for p in volume.planes],
                "rescale": list(volume.rescale) if volume.rescale else None,
                "warnings": list(volume.warnings),
                "info": report,
            },
        }
    )


def write_zarr(
    volume: Volume,
    path,
    *,
    levels: int = 1,
    compressor: str = "zstd",
    clevel: int = 5,
    shard_slices: int | None = None,
    storage_options: dict | None = None,
    overwrite: bool = True,
    scheduler: str | None = "threads",
) -> str:
    """Write ``volume`` as a Zarr v3 group (OME-NGFF 0.5 attributes, one slice per chunk).

    Parameters
    ----------
    volume : Volume
        The volume to write.
    path : str or Path
        Local path or fsspec URL of the group.
    levels : int
        Resolution levels (level ``n`` is downsampled ``2**n`` in-plane by block means).
    compressor : {"zstd", "blosc", "none"}
        Chunk compression (Blosc uses zstd with byte shuffle).
    clevel : int
        Compression level.
    shard_slices : int, optional
        Slices per shard; default: unsharded unless the volume exceeds 64 MiB, then shards of
        about 64 MiB.
    storage_options : dict, optional
        fsspec options for a remote ``path``.
    overwrite : bool
        Replace an existing group.
    scheduler : str
        Dask scheduler used to decode and write.

    Returns
    -------
    str
        The group path.

    Examples
    --------
    >>> vol.to_zarr("lake/ct/sub-01.zarr")     # doctest: +SKIP
    """
    import dask.array as da
    import zarr
    from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

    if compressor == "zstd":
        compressors: Any = [ZstdCodec(level=clevel)]
    elif compressor == "blosc":
        compressors = [BloscCodec(cname="zstd", clevel=clevel, shuffle=BloscShuffle.shuffle)]
    elif compressor == "none":
        compressors = None
    else:
        raise ValueError(f"unknown compressor {compressor!r}: zstd, blosc or none")
    store = str(path)
    group = zarr.open_group(
        store,
        mode="w" if overwrite else "w-",
        zarr_format=3,
        storage_options=storage_options,
    )
    group.attrs.update(zarr_attributes(volume, levels))
    names = [a["name"] for a in _axes(volume)]
    array = volume.array
    z_axis = names.index("z")
    for level in range(levels):
        data = array
        if level:
            factors = {i: 1 for i in range(array.ndim)}
            factors[z_axis + 1] = factors[z_axis + 2] = 2**level
            trimmed = data[
                tuple(slice(0, (n // factors[i]) * factors[i]) for i, n in enumerate(data.shape))
            ]
            data = da.coarsen(np.mean, trimmed, factors, trim_excess=True).astype(array.dtype)
        chunks = [1] * data.ndim
        chunks[z_axis + 1 :] = data.shape[z_axis + 1 :]
        slice_bytes = int(np.prod(chunks)) * data.dtype.itemsize
        shards = None
        total = int(np.prod(data.shape)) * data.dtype.itemsize
        per_shard = shard_slices
        if per_shard is None and total > _SHARD_BYTES:
            per_shard = max(1, _SHARD_BYTES // slice_bytes)
        if per_shard and per_shard > 1:
            shards = list(chunks)
            shards[z_axis] = min(int(per_shard), data.shape[z_axis])
        target = group.create_array(
            str(level),
            shape=data.shape,
            dtype=data.dtype,
            chunks=tuple(chunks),
            shards=tuple(shards) if shards else None,
            compressors=compressors,
            dimension_names=names,
            fill_value=0,
        )
        write_chunks = shards or chunks
        data = data.rechunk(tuple(write_chunks))  # one task per shard: no concurrent shard writes
        da.store(data, target, lock=False, scheduler=scheduler)  # type: ignore[arg-type]
    return store
