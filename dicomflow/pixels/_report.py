"""The geometry report per series: what the catalog held, what was found, what was decided.

:func:`~dicomflow.pixels.volumes` feeds a :class:`SeriesLog` as it groups planes into stacks
and stacks into volumes; :attr:`Volumes.series_report` is its table, one row per series of
the catalog (typed by ``SERIES_SCHEMA``; files that are not DICOM belong to none), so that
a pipeline can filter series on it before it reads any pixel.

The ``decision`` column takes one of these values:

- ``volume``: one regular stack (3-D, or 4-D for repeats);
- ``volume-with-gaps``: slices are missing (gaps of a whole multiple of the spacing), kept as
  found: the gaps are not filled;
- ``volume-tilted``: a sheared stack (gantry tilt), kept as acquired (the affine is sheared);
- ``volume-irregular``: uneven spacing that is no whole multiple, kept as acquired;
- ``resampled``: a tilted or irregular stack resampled onto a regular grid (``resample=True``);
- ``split by orientation`` (or ``size``, ``pixel spacing``, ``echo``, ``image type``,
  ``complex component``, ``mosaic``, joined by commas): several volumes from one series;
- ``image`` / ``images (no geometry)``: planes without Image Position/Orientation (Patient);
- ``no image``: rows without pixel data (an SR, a KOS);
- ``refused: <reason>``: images but no volume (no consistent geometry, unreadable pixels).

``actions`` lists what was done on the way (localizers dropped, duplicates ignored, incomplete
repeats dropped, a stack refused).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..dicom import NOT_DICOM
from ._slices import NO_PIXEL_DATA

__all__ = ["LOCALIZER_DROPPED", "SERIES_SCHEMA", "SeriesLog", "series_key"]

#: The skip reason of a localizer image dropped from a series that also holds other images.
LOCALIZER_DROPPED = "localizer in a series of other images: dropped"

_GAP = pa.struct(
    [
        ("after_slice", pa.int32()),
        ("from_mm", pa.float64()),
        ("to_mm", pa.float64()),
        ("missing", pa.int32()),
    ]
)

SERIES_SCHEMA = pa.schema(
    [
        ("series_instance_uid", pa.string()),
        ("study_instance_uid", pa.string()),
        ("SeriesNumber", pa.float64()),
        ("SeriesDescription", pa.string()),
        ("Modality", pa.string()),
        ("decision", pa.string()),
        ("actions", pa.list_(pa.string())),
        ("instances", pa.int32()),
        ("images", pa.int32()),
        ("volumes", pa.int32()),
        ("volume_index", pa.list_(pa.int32())),
        ("shape", pa.list_(pa.int64())),
        ("shapes", pa.list_(pa.list_(pa.int64()))),
        ("timepoints", pa.int32()),
        ("found_slices", pa.int32()),
        ("expected_slices", pa.int32()),
        ("declared_slices", pa.int32()),
        ("declared_frames", pa.int32()),
        ("missing_slices", pa.int32()),
        ("gap_count", pa.int32()),
        ("gaps", pa.list_(_GAP)),
        ("duplicate_instances", pa.int32()),
        ("duplicate_positions", pa.int32()),
        ("incomplete_repeats", pa.int32()),
        ("stacks", pa.int32()),
        ("orientations", pa.int32()),
        ("mixed_orientations", pa.bool_()),
        ("localizers_dropped", pa.int32()),
        ("refused_images", pa.int32()),
        ("tilt_degrees", pa.float64()),
        ("irregular_spacing", pa.bool_()),
        ("has_geometry", pa.bool_()),
        ("warnings", pa.list_(pa.string())),
    ]
)

# stack key fields (dicomflow.pixels._slices._stack_key) after study, series and number
_SPLIT_BY = {
    3: "orientation",
    4: "size",
    5: "size",
    6: "pixel spacing",
    7: "echo",
    8: "image type",
    9: "complex component",
    10: "mosaic",
}


def _number(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if np.isfinite(v) else 0.0


def series_key(row: Mapping[str, Any]) -> tuple:
    """The series of a catalog row, as the first three fields of its planes' stack keys."""
    return (
        row.get("study_instance_uid") or "",
        row.get("series_instance_uid") or "",
        _number(row.get("SeriesNumber")),
    )


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


@dataclass
class _Series:
    row: Mapping[str, Any]
    instances: int = 0
    images: int = 0
    declared_slices: int | None = None
    declared_frames: int | None = None
    localizers: int = 0
    skipped: list[str] = field(default_factory=list)
    refused: list[tuple[tuple, int, str]] = field(default_factory=list)
    built: list[tuple[tuple, int, Any, Mapping[str, Any]]] = field(default_factory=list)


def _reason(uri: str, why: str) -> str:
    return why[len(uri) :].lstrip(": ") if why.startswith(uri) else why


class SeriesLog:
    """What happened to each series of a catalog, in first-appearance order."""

    def __init__(self, rows: list[dict[str, Any]]):
        self._series: dict[tuple, _Series] = {}
        self._of_uri: dict[str, tuple] = {}
        for row in rows:
            if not row.get("series_instance_uid") and NOT_DICOM in str(row.get("error") or ""):
                continue  # not DICOM (a README beside the files): no series of the catalog
            key = series_key(row)
            entry = self._series.setdefault(key, _Series(row))
            entry.instances += 1
            self._of_uri.setdefault(str(row.get("uri")), key)
            declared = _int(row.get("ImagesInAcquisition"))
            if declared:
                entry.declared_slices = max(entry.declared_slices or 0, declared)
            frames = _int(row.get("number_of_frames") or row.get("NumberOfFrames"))
            if frames and frames > 1:
                entry.declared_frames = (entry.declared_frames or 0) + frames

    def images(self, key: tuple, count: int) -> None:
        self._series[key[:3]].images += count

    def localizers(self, key: tuple, count: int) -> None:
        self._series[key[:3]].localizers += count

    def skipped(self, uri: str, why: str) -> None:
        key = self._of_uri.get(uri)
        if key is not None:
            self._series[key].skipped.append(_reason(uri, why))

    def refused(self, key: tuple, count: int, why: str) -> None:
        self._series[key[:3]].refused.append((key, count, why))

    def built(self, key: tuple, index: int, volume: Any, before: Mapping[str, Any]) -> None:
        """A volume at ``index`` of the result; ``before``: its info before any resampling."""
        self._series[key[:3]].built.append((key, index, volume, before))

    def table(self) -> pa.Table:
        rows = [_row(s) for s in self._series.values()]
        return pa.Table.from_pylist(rows, schema=SERIES_SCHEMA)


def _split(keys: list[tuple]) -> str:
    differ: list[str] = []
    for i, name in _SPLIT_BY.items():
        values = {k[i] if len(k) > i else None for k in keys}
        if len(values) > 1 and name not in differ:
            differ.append(name)
    return "split by " + (", ".join(differ) or "stack")


def _decision(s: _Series, keys: list[tuple]) -> str:
    if not s.built and not s.refused:
        kinds = [r for r in s.skipped if r != LOCALIZER_DROPPED]
        problems = [r for r in kinds if r != NO_PIXEL_DATA]
        return f"refused: {problems[0]}" if problems else "no image"
    if not s.built:
        return f"refused: {s.refused[0][2]}"
    if len(keys) > 1:
        return _split(keys)
    _, _, volume, info = s.built[0]
    if volume.grid is None:
        return "images (no geometry)" if (info.get("slices") or 0) > 1 else "image"
    if volume.info.get("resampled"):
        return "resampled"
    if info.get("missing_slices"):
        return "volume-with-gaps"
    if (info.get("tilt_degrees") or 0.0) > 0.01:
        return "volume-tilted"
    if info.get("irregular_spacing"):
        return "volume-irregular"
    return "volume"


def _sum(values: list[Any]) -> int | None:
    present = [int(v) for v in values if v is not None]
    return sum(present) if present else None


def _row(s: _Series) -> dict[str, Any]:
    infos = [before for _, _, _, before in s.built]
    vols = [v for _, _, v, _ in s.built]
    keys = [k for k, _, _, _ in s.built] + [k for k, _, _ in s.refused]
    actions: list[str] = []
    if s.localizers:
        actions.append(f"dropped {s.localizers} localizer image(s)")
    for name, text in (
        ("duplicate_instances", "ignored {} duplicate instance(s)"),
        ("duplicate_positions", "kept the earliest of {} duplicate slice(s)"),
        ("incomplete_repeats", "dropped {} image(s) of incomplete repeats"),
    ):
        count = sum(int(i.get(name) or 0) for i in infos)
        if count:
            actions.append(text.format(count))
    if any(i.get("mosaic") for i in infos):
        actions.append("cut mosaics into slices")
    for _, count, why in s.refused:
        actions.append(f"refused a stack of {count} image(s): {why}")
    if any(v.info.get("resampled") for v in vols):
        actions.append("resampled onto a regular grid")
    gaps = [g for i in infos for g in i.get("gaps") or []]
    orientations = {k[3] for k in keys if len(k) > 3 and k[3]}
    warnings: list[str] = []
    for v in vols:
        for w in v.warnings:
            if not w.startswith("series split into") and w not in warnings:
                warnings.append(w)
    for why in [*s.skipped, *(r[2] for r in s.refused)]:
        if why not in warnings and why != LOCALIZER_DROPPED:
            warnings.append(why)
    row = s.row
    first = vols[0].info if vols else {}
    timepoints = [v.shape[0] if v.is_4d else 1 for v in vols]
    return {
        "series_instance_uid": row.get("series_instance_uid"),
        "study_instance_uid": row.get("study_instance_uid"),
        "SeriesNumber": None if row.get("SeriesNumber") is None else _number(row["SeriesNumber"]),
        "SeriesDescription": first.get("SeriesDescription") or row.get("SeriesDescription"),
        "Modality": first.get("Modality") or row.get("Modality"),
        "decision": _decision(s, keys),
        "actions": actions,
        "instances": s.instances,
        "images": s.images,
        "volumes": len(vols),
        "volume_index": [i for _, i, _, _ in s.built],
        "shape": list(vols[0].shape) if len(vols) == 1 else None,
        "shapes": [list(v.shape) for v in vols],
        "timepoints": max(timepoints) if timepoints else None,
        "found_slices": _sum([i.get("slices") for i in infos]),
        "expected_slices": _sum([i.get("expected_slices") for i in infos]),
        "declared_slices": s.declared_slices,
        "declared_frames": s.declared_frames,
        "missing_slices": sum(int(i.get("missing_slices") or 0) for i in infos),
        "gap_count": len(gaps),
        "gaps": gaps,
        "duplicate_instances": sum(int(i.get("duplicate_instances") or 0) for i in infos),
        "duplicate_positions": sum(int(i.get("duplicate_positions") or 0) for i in infos),
        "incomplete_repeats": sum(int(i.get("incomplete_repeats") or 0) for i in infos),
        "stacks": len(keys),
        "orientations": len(orientations),
        "mixed_orientations": len(orientations) > 1,
        "localizers_dropped": s.localizers,
        "refused_images": sum(c for _, c, _ in s.refused),
        "tilt_degrees": max((float(i.get("tilt_degrees") or 0.0) for i in infos), default=None),
        "irregular_spacing": any(bool(i.get("irregular_spacing")) for i in infos),
        "has_geometry": any(v.grid is not None for v in vols),
        "warnings": warnings,
    }
