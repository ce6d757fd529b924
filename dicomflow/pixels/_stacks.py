"""Grouping planes into volumes: stacks, repeats (4-D), sorting, geometry, mosaics."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from ._errors import GeometryError
from ._frames import PixelOptions, frames_array, load_frame
from ._geometry import Grid, analyse_stack, normal_of
from ._report import LOCALIZER_DROPPED, SeriesLog
from ._slices import Plane, planes_from_rows
from ._table import as_rows
from ._volume import Volume, Volumes

__all__ = ["volumes"]


_META_KEYS = (
    "Modality", "Manufacturer", "ManufacturerModelName", "SeriesDescription", "ProtocolName",
    "SeriesNumber", "BodyPartExamined", "PatientPosition", "MagneticFieldStrength",
    "EchoTime", "RepetitionTime", "FlipAngle", "SliceThickness", "SpacingBetweenSlices",
    "ConvolutionKernel", "KVP", "GantryDetectorTilt", "FrameOfReferenceUID",
    "StudyInstanceUID", "AcquisitionNumber", "ImageType", "MRAcquisitionType",
    "ScanningSequence", "SequenceName", "EchoPlanarPulseSequence",
)  # fmt: skip


def _meta(plane: Plane) -> dict[str, Any]:
    row = plane.row
    meta = {k: row.get(k) for k in _META_KEYS if row.get(k) is not None}
    meta["SeriesInstanceUID"] = row.get("series_instance_uid")
    meta["StudyInstanceUID"] = row.get("study_instance_uid") or row.get("StudyInstanceUID")
    for key in ("SliceThickness", "SpacingBetweenSlices"):
        if plane.extra.get(key) is not None:
            meta[key] = float(plane.extra[key])
    for key in (
        "MRAcquisitionType",
        "ScanningSequence",
        "EchoPlanarPulseSequence",
        "RepetitionTime",
        "FlipAngle",
    ):
        if plane.extra.get(key) is not None:
            meta[key] = plane.extra[key]
    if plane.echo[1] is not None:
        meta["EchoTime"] = plane.echo[1]
    if plane.image_type:
        meta["ImageType"] = list(plane.image_type)
    return meta


def _position_key(p: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(x) + 0.0 for x in np.round(p, 2))  # type: ignore[return-value]


def _split_repeats(planes: list[Plane]) -> tuple[list[list[Plane]], list[str], dict[str, int]]:
    """Group planes by position; return per-position lists sorted in time, warnings, counts.

    The counts: ``duplicate_instances`` (an instance listed twice: ignored),
    ``duplicate_positions`` (extra images at a position of a stack without repeats: the
    earliest kept), ``incomplete_repeats`` (images of repeats not complete at every position),
    and ``dropped_images``, the last two together.
    """
    by_pos: dict[tuple, list[Plane]] = defaultdict(list)
    seen: set[tuple] = set()
    exact_duplicates = 0
    keys: list | None = None
    if planes and all(p.position is not None for p in planes):  # all rounded at once
        rounded = np.round(np.array([p.position for p in planes], float), 2) + 0.0
        keys = [tuple(k) for k in rounded.tolist()]
    for i, p in enumerate(planes):
        ident = (p.sop_instance_uid, p.ref.uri if p.sop_instance_uid is None else "", p.ref.index)
        if ident in seen:
            exact_duplicates += 1
            continue
        seen.add(ident)
        key = keys[i] if keys is not None else _position_key(p.position)  # type: ignore[arg-type]
        by_pos[key].append(p)
    warnings = []
    if exact_duplicates:
        warnings.append(f"{exact_duplicates} duplicate instance(s) ignored")
    groups = [sorted(g, key=Plane.time_key) for g in by_pos.values()]
    counts = Counter(len(g) for g in groups)
    repeats = min(counts)
    dropped = sum(len(g) - repeats for g in groups)
    duplicates = incomplete = 0
    if len(counts) > 1:
        if repeats == 1 and max(counts) > 1:
            duplicates = dropped
            warnings.append(
                f"{dropped} duplicate slice(s) at {sum(1 for g in groups if len(g) > 1)} "
                "position(s): the earliest of each kept"
            )
        else:
            incomplete = dropped
            warnings.append(
                f"positions hold {sorted(counts)} images: kept {repeats} repeat(s) per position, "
                f"dropped {dropped} image(s) of incomplete repeats"
            )
    groups = [g[:repeats] for g in groups]
    stats = {
        "duplicate_instances": exact_duplicates,
        "duplicate_positions": duplicates,
        "incomplete_repeats": incomplete,
        "dropped_images": dropped,
    }
    return groups, warnings, stats


def _geometry_stack(
    planes: list[Plane], options: PixelOptions, storage_options
) -> tuple[da.Array, Grid, tuple[Plane, ...], dict, tuple[str, ...]]:
    orientation = planes[0].orientation
    groups, warnings, stats = _split_repeats(planes)
    positions = np.array([g[0].position for g in groups])
    report = analyse_stack(positions, orientation)
    warnings = [*warnings, *report.warnings]
    ordered = [groups[i] for i in report.order]
    repeats = len(ordered[0])
    # array order: time-major
    seq = [ordered[z][t] for t in range(repeats) for z in range(len(ordered))]
    first = ordered[0][0]
    fmt = first.ref.fmt
    rows, columns = fmt.rows, fmt.columns
    dr, dc = first.pixel_spacing or (1.0, 1.0)
    if first.pixel_spacing is None:
        warnings.append(
            first.extra.get("pixel_spacing_problem") or "no Pixel Spacing: 1 mm assumed"
        )
    iop = np.asarray(orientation, float)
    step = report.step
    if len(ordered) == 1:
        thickness = (
            first.extra.get("SpacingBetweenSlices")
            or first.row.get("SpacingBetweenSlices")
            or first.extra.get("SliceThickness")
            or first.row.get("SliceThickness")
            or 1.0
        )
        step = normal_of(orientation) * float(thickness)
    grid = Grid(
        origin=np.asarray(first.position, float),
        row_direction=iop[:3] / np.linalg.norm(iop[:3]),
        column_direction=iop[3:] / np.linalg.norm(iop[3:]),
        slice_step=step,
        pixel_spacing=(float(dr), float(dc)),
        shape=(len(ordered), rows, columns),
    )
    array = _planes_array(seq, options, storage_options)
    if repeats > 1:
        array = array.reshape((repeats, len(ordered), *array.shape[1:]))
    info = {
        "slices": len(ordered),
        "tilt_degrees": report.tilt_degrees,
        "irregular_spacing": report.irregular,
        "max_spacing_deviation": report.max_spacing_deviation,
        "missing_slices": report.missing,
        "duplicate_slices": report.duplicates,
        **stats,
        "expected_slices": report.expected if len(ordered) > 1 else 1,
        "gaps": [
            {"after_slice": k, "from_mm": a, "to_mm": b, "missing": m} for k, a, b, m in report.gaps
        ],
        "orientation": list(iop),
        "slice_distances": report.distances.tolist(),
    }
    return array, grid, tuple(seq), info, tuple(warnings)


def _planes_array(seq: Sequence[Plane], options: PixelOptions, storage_options) -> da.Array:
    refs = [p.ref for p in seq]
    transforms = [p.transform(options) for p in seq]
    return frames_array(
        refs,
        options=options,
        transforms=transforms,
        storage_options=storage_options,
        dtype=options.output_dtype(refs[0].fmt.dtype),
    )


def _mosaic_chunk(plane: Plane, options: PixelOptions, storage_options, dtype) -> np.ndarray:
    frame = load_frame(plane.ref, options, plane.transform(options), storage_options)
    return plane.mosaic.tiles(frame).astype(dtype, copy=False)[None]  # type: ignore[union-attr]


def _mosaic_stack(planes: list[Plane], options: PixelOptions, storage_options):
    groups, warnings, stats = _split_repeats(planes)
    dropped = stats["dropped_images"]
    if len(groups) > 1:
        warnings.append(f"mosaics at {len(groups)} different positions: the first kept")
        dropped += sum(len(g) for g in groups[1:])
    seq = groups[0]
    first = seq[0]
    info_m = first.mosaic
    assert info_m is not None
    dr, dc = first.pixel_spacing or (1.0, 1.0)
    iop = np.asarray(first.orientation, float)
    between = first.row.get("SpacingBetweenSlices") or first.row.get("SliceThickness") or 1.0
    grid = Grid(
        origin=np.asarray(first.position, float),
        row_direction=iop[:3] / np.linalg.norm(iop[:3]),
        column_direction=iop[3:] / np.linalg.norm(iop[3:]),
        slice_step=info_m.normal * float(between),
        pixel_spacing=(float(dr), float(dc)),
        shape=(info_m.count, info_m.tile_rows, info_m.tile_columns),
    )
    fmt = first.ref.fmt
    dtype = options.output_dtype(fmt.dtype)
    name = "dicomflow-mosaic-" + tokenize(
        [(p.ref.uri, p.ref.index, p.ref.start, p.ref.stop) for p in seq],
        options,
        dict(storage_options or {}),
        dtype,
    )
    tail = fmt.frame_shape[2:]
    layer: dict[Any, Any] = {
        (name, t, 0, 0, 0, *([0] * len(tail))): (
            _mosaic_chunk,
            p,
            options,
            dict(storage_options or {}),
            np.dtype(dtype),
        )
        for t, p in enumerate(seq)
    }
    chunks = (
        (1,) * len(seq),
        (info_m.count,),
        (info_m.tile_rows,),
        (info_m.tile_columns,),
        *((n,) for n in tail),
    )
    graph = HighLevelGraph.from_collections(name, layer, dependencies=())
    array = da.Array(graph, name, chunks, dtype=dtype)
    if len(seq) == 1:
        array = array[0]
    info = {
        "slices": info_m.count,
        "tilt_degrees": 0.0,
        "irregular_spacing": False,
        "max_spacing_deviation": 0.0,
        "missing_slices": 0,
        "duplicate_slices": 0,
        **stats,
        "dropped_images": dropped,
        "expected_slices": info_m.count,
        "gaps": [],
        "orientation": list(iop),
        "mosaic": True,
        "SliceTiming": [t / 1000.0 for t in info_m.slice_times] or None,
    }
    return array, grid, tuple(seq), info, tuple(warnings)


def _flat_stack(planes: list[Plane], options: PixelOptions, storage_options):
    """Planes without patient geometry: a sequence of 2-D images in acquisition order."""
    seq = sorted(planes, key=Plane.time_key)
    array = _planes_array(seq, options, storage_options)
    info = {"slices": len(seq), "orientation": None}
    warnings: tuple[str, ...] = ()
    if len(seq) > 1:
        warnings = ("no Image Position/Orientation (Patient): no patient geometry",)
    return array, None, tuple(seq), info, warnings


def volumes(
    catalog: Any,
    *,
    options: PixelOptions = PixelOptions(),  # noqa: B008 - frozen
    storage_options: Mapping[str, Any] | None = None,
    resample: bool = False,
    keep_localizers: bool = False,
) -> Volumes:
    """Group the catalog's images into volumes.

    Rows are grouped by study, series (UID and number), then split into stacks of one
    orientation, size, pixel spacing, echo, image type and complex component. Within a stack,
    images are sorted along the slice normal; repeats of the same positions become a 4-D volume
    ``(time, slices, rows, columns)`` ordered by temporal position, acquisition number,
    acquisition time, then instance number. Enhanced multi-frame objects contribute one plane per
    frame (functional groups); Siemens mosaics are cut into their slices.

    Parameters
    ----------
    catalog : catalog-like
        A dicomflow catalog, Arrow table, polars/pandas frame, rows, or paths.
    options : PixelOptions
        Decoding options (modality LUT, inversion, backend, chunking) for every volume.
    storage_options : mapping, optional
        fsspec options for every read.
    resample : bool
        Return tilted or irregularly spaced stacks resampled onto a regular orthogonal grid
        (see :meth:`Volume.resampled`); by default they are kept as acquired and reported.
    keep_localizers : bool
        Keep localizer images (Image Type ``LOCALIZER``) that share a series with other
        images as volumes of their own; by default they are dropped from it (listed in
        ``skipped``). A series of localizers only is always kept.

    Returns
    -------
    Volumes
        A sequence of :class:`Volume`; ``.report`` is the geometry table (one row per
        volume), ``.series_report`` the one per series (found and expected slices, gaps,
        duplicates, localizers, the decision taken), ``.skipped`` lists rows that gave no
        image and why.

    Examples
    --------
    >>> vols = volumes(catalog)                        # doctest: +SKIP
    >>> vols.to_polars().filter(pl.col("irregular_spacing"))  # doctest: +SKIP
    >>> vols[0].array[10].compute()                    # doctest: +SKIP
    """
    rows = as_rows(catalog)
    log = SeriesLog(rows)
    planes, skipped = planes_from_rows(rows, storage_options)
    stacks: dict[tuple, list[Plane]] = defaultdict(list)
    for plane in planes:
        stacks[plane.stack].append(plane)  # dicts keep first-appearance order
    for key, members in stacks.items():
        log.images(key, len(members))
    if not keep_localizers:
        _drop_localizers(stacks, skipped, log)
    for uri, why in skipped:
        log.skipped(uri, why)
    result: list[Volume] = []
    per_series = Counter(key[:3] for key in stacks)
    for key in sorted(stacks, key=lambda k: _sortable((k[0], k[2], k[1]))):
        members = stacks[key]
        try:
            if members[0].mosaic is not None:
                built = _mosaic_stack(members, options, storage_options)
            elif all(p.position is not None and p.orientation is not None for p in members):
                built = _geometry_stack(members, options, storage_options)
            else:
                built = _flat_stack(members, options, storage_options)
        except GeometryError as exc:
            skipped.extend((p.ref.uri, f"geometry: {exc}") for p in members)
            log.refused(key, len(members), f"geometry: {exc}")
            continue
        array, grid, seq, info, warnings = built
        if per_series[key[:3]] > 1:
            warnings = (
                f"series split into {per_series[key[:3]]} stacks (orientation, size, pixel "
                "spacing, echo, image type or complex component differ): this is one",
                *warnings,
            )
        meta = _meta(seq[0])
        volume = Volume(
            array=array,
            grid=grid,
            planes=seq,
            warnings=warnings,
            info={**meta, **info},
            storage_options=storage_options,
            options=options,
            stacked=not info.get("mosaic"),
        )
        acquired = volume.info
        if (
            resample
            and grid is not None
            and (info.get("tilt_degrees") or info.get("irregular_spacing"))
        ):
            if volume.is_4d or volume.array.ndim != 3:  # resampling handles 3-D grey stacks
                note = "not resampled (4-D or colour volumes are kept as acquired): see tilt"
                volume = replace(volume, warnings=(*volume.warnings, note))
            else:
                volume = volume.resampled()
        log.built(key, len(result), volume, acquired)
        result.append(volume)
    return Volumes(result, skipped, series=log.table())


def _drop_localizers(
    stacks: dict[tuple, list[Plane]], skipped: list[tuple[str, str]], log: SeriesLog
) -> None:
    """Drop the localizer stacks of every series that also holds stacks of other images."""
    by_series: dict[tuple, list[tuple]] = defaultdict(list)
    for key in stacks:
        by_series[key[:3]].append(key)
    for keys in by_series.values():
        scouts = [k for k in keys if "LOCALIZER" in k[8]]
        if not scouts or len(scouts) == len(keys):
            continue
        for key in scouts:
            members = stacks.pop(key)
            log.localizers(key, len(members))
            skipped.extend((p.ref.uri, LOCALIZER_DROPPED) for p in members)


def _sortable(key) -> tuple:
    """Order None < numbers < strings, recursively, so mixed keys sort without errors."""
    if isinstance(key, tuple | list):
        return (3, tuple(_sortable(k) for k in key))
    if key is None:
        return (0, 0)
    if isinstance(key, int | float | np.integer | np.floating):
        return (1, float(key))
    return (2, str(key))
