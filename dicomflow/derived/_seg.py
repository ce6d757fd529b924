"""DICOM SEG (binary, fractional, labelmap) to a label volume on the referenced series' grid."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pydicom
from pydicom.multival import MultiValue

from ..errors import DerivedObjectError

SEGMENT_SCHEMA = pa.schema(
    [
        ("SOPInstanceUID", pa.string()),
        ("SegmentNumber", pa.int32()),
        ("SegmentLabel", pa.string()),
        ("SegmentDescription", pa.string()),
        ("CategoryCode", pa.string()),
        ("CategoryMeaning", pa.string()),
        ("TypeCode", pa.string()),
        ("TypeMeaning", pa.string()),
        ("SegmentAlgorithmType", pa.string()),
        ("SegmentAlgorithmName", pa.string()),
        ("ReferencedSeriesInstanceUID", pa.string()),
        ("voxels", pa.int64()),
    ]
)


@dataclass(frozen=True)
class LabelVolume:
    """Labels of a SEG or RTSTRUCT on the grid of the series it references.

    ``labels`` is ``(slices, rows, columns)`` in the array order of that series'
    :class:`~dicomflow.pixels.Volume` (``affine`` is the same LPS affine), each voxel holding the
    number of the segment (or ROI) covering it, 0 for none; where segments overlap the highest
    number wins and ``masks`` keeps each one separately. ``segments`` is the segment (or ROI)
    table; ``warnings`` says what was not placed.
    """

    labels: np.ndarray
    affine: np.ndarray
    segments: pa.Table
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_nifti(self, path: Any, *, reorient: bool = False) -> Any:
        """Write the label map as NIfTI-1 in the layout dicomflow writes the series in.

        ``reorient=True`` permutes and flips the axes losslessly to the closest RAS layout, as
        ``Volume.to_nifti(reorient=True)`` (and ``"auto"`` for 3-D MR) does with the series.
        """
        import nibabel as nib
        from nibabel.orientations import (
            apply_orientation,
            axcodes2ornt,
            inv_ornt_aff,
            io_orientation,
            ornt_transform,
        )

        flip = np.eye(4)
        flip[1, 1] = -1.0
        flip[1, 3] = self.labels.shape[1] - 1
        data = np.transpose(self.labels[:, ::-1, :], (2, 1, 0))
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine @ flip
        if reorient:
            ornt = ornt_transform(io_orientation(affine), axcodes2ornt("RAS"))
            affine = affine @ inv_ornt_aff(ornt, data.shape)
            data = apply_orientation(data, ornt)
        image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
        image.header.set_intent("label")
        nib.save(image, str(path))
        return path


def _code(item: Any, keyword: str) -> tuple[str | None, str | None]:
    seq = item.get(keyword)
    if not seq:
        return None, None
    code = seq[0]
    return (
        f"{code.get('CodingSchemeDesignator', '')}:{code.get('CodeValue', '')}",
        code.get("CodeMeaning"),
    )


def segment_table(ds: Any) -> list[dict[str, Any]]:
    """One dict per segment of a SEG data set (the columns of ``SEGMENT_SCHEMA``)."""
    ref_series = None
    if ds.get("ReferencedSeriesSequence"):
        ref_series = ds.ReferencedSeriesSequence[0].get("SeriesInstanceUID")
    rows = []
    for item in ds.get("SegmentSequence", []):
        cat, cat_m = _code(item, "SegmentedPropertyCategoryCodeSequence")
        typ, typ_m = _code(item, "SegmentedPropertyTypeCodeSequence")
        rows.append(
            {
                "SOPInstanceUID": str(ds.SOPInstanceUID),
                "SegmentNumber": int(item.SegmentNumber),
                "SegmentLabel": item.get("SegmentLabel"),
                "SegmentDescription": item.get("SegmentDescription"),
                "CategoryCode": cat,
                "CategoryMeaning": cat_m,
                "TypeCode": typ,
                "TypeMeaning": typ_m,
                "SegmentAlgorithmType": item.get("SegmentAlgorithmType"),
                "SegmentAlgorithmName": item.get("SegmentAlgorithmName"),
                "ReferencedSeriesInstanceUID": ref_series,
                "voxels": 0,
            }
        )
    return rows


def _frame_items(ds: Any, n: int) -> list[Any]:
    per = ds.get("PerFrameFunctionalGroupsSequence")
    if per is None or len(per) != n:
        raise DerivedObjectError(f"SEG {ds.SOPInstanceUID}: {n} frames but no matching groups")
    return list(per)


def _source(item: Any) -> tuple[str, int] | None:
    """The source image (SOP Instance UID, frame number: 1 when it names none) of a frame."""
    for der in item.get("DerivationImageSequence", []):
        for src in der.get("SourceImageSequence", []):
            frames = src.get("ReferencedFrameNumber")
            if isinstance(frames, list | tuple | MultiValue):
                frames = frames[0] if len(frames) == 1 else None
            return str(src.ReferencedSOPInstanceUID), int(frames or 1)
    return None


def _slice_index(volume: Any) -> dict[tuple[str, int], int]:
    """Slice of each (SOP Instance UID, frame number) of the volume's planes."""
    out: dict[tuple[str, int], int] = {}
    for k, plane in enumerate(volume.planes):
        if plane.sop_instance_uid and plane.mosaic is None:
            out[(plane.sop_instance_uid, plane.ref.index + 1)] = k
    return out


def _position(item: Any, shared: Any) -> np.ndarray | None:
    for group in (item, shared):
        if group is not None and group.get("PlanePositionSequence"):
            pos = group.PlanePositionSequence[0].get("ImagePositionPatient")
            if pos is not None:
                return np.asarray([float(v) for v in pos])
    return None


def _frames(ds: Any, n: int) -> np.ndarray:
    """All frames; 1-bit native pixel data is unpacked directly (little-endian bit order)."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    native = syntax is not None and not syntax.is_compressed
    if native and int(ds.BitsAllocated) == 1 and "PixelData" in ds:
        count = n * int(ds.Rows) * int(ds.Columns)
        bits = np.unpackbits(np.frombuffer(ds.PixelData, dtype=np.uint8), bitorder="little")
        if bits.size < count:
            raise DerivedObjectError(f"SEG {ds.SOPInstanceUID}: pixel data shorter than its frames")
        return bits[:count]
    return np.asarray(ds.pixel_array)


def _segment_number(item: Any, shared: Any) -> int:
    """The segment of a frame: per frame, or shared by all (a SEG of one segment)."""
    for group in (item, shared):
        if group is not None and group.get("SegmentIdentificationSequence"):
            return int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    raise DerivedObjectError("a SEG frame names no segment (Segment Identification Sequence)")


def read_seg(seg: Any, volume: Any, *, threshold: float = 0.5) -> LabelVolume:
    """A SEG as a label volume on the grid of ``volume`` (the referenced series).

    Parameters
    ----------
    seg : path or pydicom.Dataset
        A Segmentation (binary, fractional or labelmap).
    volume : dicomflow.pixels.Volume
        The series the SEG references, as ``dfl.volumes`` gives it.
    threshold : float
        Fractional segments cover a voxel where the fraction is at least this.

    Each frame is placed by the SOP Instance UID (and frame number, for a multi-frame
    source) of its source image when the SEG names it, otherwise by its Image Position
    (Patient) on the volume's grid; a frame that lands on no slice of the volume is reported
    in ``warnings``.
    """
    ds = seg if isinstance(seg, pydicom.Dataset) else pydicom.dcmread(seg)
    if ds.get("Modality") != "SEG":
        raise DerivedObjectError(f"not a SEG: Modality {ds.get('Modality')!r}")
    shape = tuple(volume.shape[-3:])
    if volume.is_4d or len(volume.shape) != 3:
        raise DerivedObjectError("SEG labels go on a 3-D single-channel volume")
    if (int(ds.Rows), int(ds.Columns)) != shape[1:]:
        raise DerivedObjectError(
            f"SEG frames are {ds.Rows}x{ds.Columns}, the series {shape[1]}x{shape[2]}"
        )
    n = int(ds.get("NumberOfFrames", 1) or 1)
    frames = _frames(ds, n).reshape(n, shape[1], shape[2])
    kind = ds.get("SegmentationType", "BINARY")
    is_labelmap = kind == "LABELMAP"
    if kind == "FRACTIONAL":
        top = float(ds.get("MaximumFractionalValue", 255))
        frames = frames >= threshold * top
    uid_index = _slice_index(volume)
    inverse = np.linalg.inv(volume.affine)
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    items = _frame_items(ds, n)
    segs = segment_table(ds)
    numbers = [r["SegmentNumber"] for r in segs]
    masks: dict[int, np.ndarray] = {}
    if not is_labelmap:
        masks = {num: np.zeros(shape, dtype=bool) for num in numbers}
    labels = np.zeros(shape, dtype=np.uint16)
    warnings = []
    for i, item in enumerate(items):
        source = _source(item)
        k = None if source is None else uid_index.get(source)
        if k is None:
            pos = _position(item, shared)
            if pos is not None:
                idx = inverse @ np.append(pos, 1.0)
                kf = float(idx[2])
                if abs(idx[0]) < 0.5 and abs(idx[1]) < 0.5 and abs(kf - round(kf)) < 0.25:
                    k = int(round(kf)) if 0 <= round(kf) < shape[0] else None
        if k is None:
            warnings.append(f"frame {i + 1} lies on no slice of the referenced series")
            continue
        if is_labelmap:
            frame = frames[i]
            labels[k] = np.where(frame > 0, frame, labels[k])
            continue
        num = _segment_number(item, shared)
        if num not in masks:
            raise DerivedObjectError(
                f"SEG frame {i + 1} names segment {num}, which its Segment Sequence lacks"
            )
        masks[num][k] |= frames[i].astype(bool)
    for num in sorted(masks):
        labels[masks[num]] = num
    counts = np.bincount(labels.ravel(), minlength=max(numbers, default=0) + 1)
    for row in segs:
        num = row["SegmentNumber"]
        row["voxels"] = int(masks[num].sum()) if num in masks else int(counts[num])
    table = pa.Table.from_pylist(segs, schema=SEGMENT_SCHEMA)
    return LabelVolume(labels, volume.affine, table, masks, tuple(warnings))
