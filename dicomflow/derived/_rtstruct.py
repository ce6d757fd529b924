"""RTSTRUCT to per-ROI masks rasterised on the referenced series' geometry, and an ROI table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pydicom

from ..errors import DerivedObjectError
from ._seg import LabelVolume

ROI_SCHEMA = pa.schema(
    [
        ("SOPInstanceUID", pa.string()),
        ("ROINumber", pa.int32()),
        ("ROIName", pa.string()),
        ("RTROIInterpretedType", pa.string()),
        ("ROIGenerationAlgorithm", pa.string()),
        ("ReferencedFrameOfReferenceUID", pa.string()),
        ("ReferencedSeriesInstanceUID", pa.string()),
        ("ContourGeometricTypes", pa.string()),
        ("contours", pa.int32()),
        ("rasterised", pa.bool_()),
        ("voxels", pa.int64()),
        ("reason", pa.string()),
    ]
)

#: contour types that enclose an area; POINT and OPEN_* are reported, never filled
AREA_TYPES = frozenset({"CLOSED_PLANAR", "CLOSEDPLANAR_XOR"})


def fill_polygon(rows: int, columns: int, points: np.ndarray) -> np.ndarray:
    """Voxels of a ``rows x columns`` slice whose centre lies inside a polygon (even-odd).

    ``points`` is ``(n, 2)`` of (column, row) in voxel units; a voxel centre is inside when a
    ray to the right crosses the polygon's edges an odd number of times.
    """
    out = np.zeros((rows, columns), dtype=bool)
    if len(points) < 3:
        return out
    x0, y0 = points[:, 0], points[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cols = np.arange(columns, dtype=float)
    lo = max(int(np.ceil(y0.min())), 0)
    hi = min(int(np.floor(y0.max())), rows - 1)
    for r in range(lo, hi + 1):
        y = float(r)
        crosses = (y0 <= y) != (y1 <= y)
        if not crosses.any():
            continue
        xa, ya, xb, yb = x0[crosses], y0[crosses], x1[crosses], y1[crosses]
        xs = np.sort(xa + (y - ya) * (xb - xa) / (yb - ya))
        for start, stop in zip(xs[0::2], xs[1::2]):
            out[r] ^= (cols >= start) & (cols < stop)
    return out


def _referenced_series(ds: Any) -> dict[str, str]:
    """Frame of Reference UID -> Series Instance UIDs named in the structure set."""
    out: dict[str, str] = {}
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                out.setdefault(str(frame.FrameOfReferenceUID), str(series.SeriesInstanceUID))
    return out


def read_rtstruct(rtstruct: Any, volume: Any) -> LabelVolume:
    """An RT Structure Set as per-ROI masks on the grid of ``volume``.

    Only ROIs whose contours lie in the volume's frame of reference (the series the structure
    set references) are rasterised; the others are in the ROI table with ``rasterised`` false
    and the reason. Closed planar contours on one slice are combined by exclusive or, so a
    contour inside another is a hole. POINT, OPEN_PLANAR and OPEN_NONPLANAR contours enclose no
    area: their ROIs are listed, not filled. A contour not lying on a slice of the volume (more
    than a quarter slice off) is counted in ``warnings``.
    """
    ds = (
        rtstruct if isinstance(rtstruct, pydicom.Dataset) else pydicom.dcmread(rtstruct, force=True)
    )
    if ds.get("Modality") != "RTSTRUCT":
        raise DerivedObjectError(f"not an RTSTRUCT: Modality {ds.get('Modality')!r}")
    shape = tuple(volume.shape[-3:])
    inverse = np.linalg.inv(volume.affine)
    series_uid = volume.info.get("SeriesInstanceUID")
    volume_for = volume.info.get("FrameOfReferenceUID")
    ref_series = _referenced_series(ds)
    contours_of = {int(c.ReferencedROINumber): c for c in ds.get("ROIContourSequence", [])}
    types_of = {
        int(o.ReferencedROINumber): o.get("RTROIInterpretedType")
        for o in ds.get("RTROIObservationsSequence", [])
    }
    masks: dict[int, np.ndarray] = {}
    rows, warnings = [], []
    for roi in ds.get("StructureSetROISequence", []):
        number = int(roi.ROINumber)
        for_uid = str(roi.get("ReferencedFrameOfReferenceUID", ""))
        contours = (
            list(contours_of[number].get("ContourSequence", [])) if number in contours_of else []
        )
        kinds = sorted({str(c.get("ContourGeometricType", "")) for c in contours})
        row = {
            "SOPInstanceUID": str(ds.SOPInstanceUID),
            "ROINumber": number,
            "ROIName": roi.get("ROIName"),
            "RTROIInterpretedType": types_of.get(number),
            "ROIGenerationAlgorithm": roi.get("ROIGenerationAlgorithm"),
            "ReferencedFrameOfReferenceUID": for_uid or None,
            "ReferencedSeriesInstanceUID": ref_series.get(for_uid),
            "ContourGeometricTypes": "\\".join(kinds) or None,
            "contours": len(contours),
            "rasterised": False,
            "voxels": 0,
            "reason": None,
        }
        rows.append(row)
        if volume_for and for_uid and for_uid != volume_for:
            row["reason"] = "another frame of reference than the series"
            continue
        if ref_series.get(for_uid) not in (None, series_uid):
            row["reason"] = "references another series"
            continue
        if not contours:
            row["reason"] = "no contours"
            continue
        if not set(kinds) & AREA_TYPES:
            row["reason"] = f"{'/'.join(kinds)} contours enclose no area"
            continue
        mask = np.zeros(shape, dtype=bool)
        for j, contour in enumerate(contours):
            if contour.get("ContourGeometricType") not in AREA_TYPES:
                continue
            pts = np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            idx = (inverse @ np.column_stack([pts, np.ones(len(pts))]).T).T
            k = float(np.median(idx[:, 2]))
            kr = int(round(k))
            if abs(k - kr) > 0.25 or not 0 <= kr < shape[0]:
                warnings.append(f"ROI {number} contour {j + 1} lies on no slice of the series")
                continue
            mask[kr] ^= fill_polygon(shape[1], shape[2], idx[:, :2])
        masks[number] = mask
        row["rasterised"] = True
        row["voxels"] = int(mask.sum())
    labels = np.zeros(shape, dtype=np.uint16)
    for number in sorted(masks):
        labels[masks[number]] = number
    table = pa.Table.from_pylist(rows, schema=ROI_SCHEMA)
    colors = {}
    for number, item in contours_of.items():
        rgb = item.get("ROIDisplayColor")
        if rgb is not None and len(rgb) == 3:
            colors[number] = (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    return LabelVolume(labels, volume.affine, table, masks, tuple(warnings), colors)
