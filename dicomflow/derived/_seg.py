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
    #: display colour (R, G, B, 0-255) of a segment or ROI where the object recommends one
    colors: dict[int, tuple[int, int, int]] = field(default_factory=dict)

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

    def to_zarr(self, image: Any, name: str, *, storage_options: Any = None) -> str:
        """Write the label map into the OME-Zarr image group of its series as ``labels/<name>``.

        ``image`` is the group ``Volume.to_zarr`` wrote for the referenced series. The label
        image follows the OME-NGFF labels layout, in the NGFF version of that group (0.5: the
        metadata under ``"ome"`` in ``zarr.json``): ``labels/`` lists its label images, and
        ``labels/<name>/`` is a multiscale image of the same axes, scales and shapes (one
        level per level of the image, sampled by nearest voxel) whose ``image-label`` gives a
        colour (``rgba``) and the properties (the segment or ROI table's row) of each label
        value, and ``source: {"image": "../../"}``. Returns the label group's path.
        """
        import zarr
        from zarr.codecs import ZstdCodec

        where = str(image)
        try:
            group = zarr.open_group(where, mode="r+", storage_options=storage_options)
        except (FileNotFoundError, ValueError, TypeError) as exc:
            raise DerivedObjectError(f"{where}: no Zarr group to put labels in ({exc})") from exc
        ome: dict[str, Any] = dict(_attrs(group).get("ome") or {})
        scales = ome.get("multiscales") or []
        if not scales:
            raise DerivedObjectError(f"{where}: not an OME-Zarr image (no multiscales)")
        axes = scales[0]["axes"]
        if [a["name"] for a in axes] != ["z", "y", "x"]:
            raise DerivedObjectError(f"{where}: labels go on a 3-D single-channel image")
        datasets = scales[0]["datasets"]
        shapes = [_shape(group, entry["path"]) for entry in datasets]
        if shapes[0] != self.labels.shape:
            raise DerivedObjectError(
                f"{where}: the image is {shapes[0]}, the labels {self.labels.shape}"
            )
        geometry = _attrs(group).get("dicomflow") or {}
        affine = geometry.get("affine_lps")
        if affine is not None and not np.allclose(affine, self.affine, atol=1e-3):
            raise DerivedObjectError(f"{where}: the labels are not on this image's grid")
        top = int(self.labels.max(initial=0))
        dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
        holder = group.require_group("labels")
        target = holder.create_group(name, overwrite=True)
        levels = []
        for entry, shape in zip(datasets, shapes, strict=True):
            data = _nearest(self.labels, shape).astype(dtype)
            array = target.create_array(
                entry["path"],
                shape=shape,
                dtype=dtype,
                chunks=(1, shape[1], shape[2]),
                compressors=[ZstdCodec(level=5)],
                dimension_names=["z", "y", "x"],
                fill_value=0,
            )
            array[...] = data
            levels.append(
                {
                    "path": entry["path"],
                    "coordinateTransformations": entry["coordinateTransformations"],
                }
            )
        version = ome.get("version", "0.5")
        target.attrs.update(
            {
                "ome": {
                    "version": version,
                    "image-label": self._image_label(),
                    "multiscales": [{"name": name, "axes": axes, "datasets": levels}],
                },
                "dicomflow": {
                    "affine_lps": self.affine.tolist(),
                    "warnings": list(self.warnings),
                },
            }
        )
        listed = [n for n in (_attrs(holder).get("ome") or {}).get("labels", []) if n != name]
        holder.attrs["ome"] = {"version": version, "labels": [*listed, name]}
        return f"{where.rstrip('/')}/labels/{name}"

    def _image_label(self) -> dict[str, Any]:
        """NGFF ``image-label``: a colour and the table's row for each label value."""
        key = "SegmentNumber" if "SegmentNumber" in self.segments.column_names else "ROINumber"
        colors, properties = [], []
        for row in self.segments.to_pylist():
            value = int(row[key])
            rgb = self.colors.get(value) or _PALETTE[(value - 1) % len(_PALETTE)]
            colors.append({"label-value": value, "rgba": [*map(int, rgb), 255]})
            properties.append({"label-value": value, **row})
        return {"colors": colors, "properties": properties, "source": {"image": "../../"}}


#: label colours where the object recommends none (distinct, readable on grey images)
_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)  # fmt: skip


def _shape(group: Any, path: str) -> tuple[int, ...]:
    """The shape of an array of the group (an error when the path holds none)."""
    array = group.get(path)
    if not hasattr(array, "shape"):
        raise DerivedObjectError(f"the image names a level {path!r} that holds no array")
    return tuple(array.shape)


def _attrs(node: Any) -> dict[str, Any]:
    """A Zarr node's attributes as plain JSON values."""
    return dict(node.attrs)


def _nearest(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``labels`` on a level of ``shape`` (in-plane factors of 2**n): the voxel nearest each
    block's centre."""
    fy, fx = labels.shape[1] // shape[1], labels.shape[2] // shape[2]
    return labels[:, fy // 2 :: fy, fx // 2 :: fx][:, : shape[1], : shape[2]]


def _lab_to_rgb(value: Any) -> tuple[int, int, int] | None:
    """A DICOM CIELab colour (three 16-bit values) as RGB, by highdicom when it is there."""
    try:
        from highdicom.color import CIELabColor
    except ImportError:
        return None
    try:
        return CIELabColor.from_dicom_value([int(v) for v in value]).to_rgb(clip=True)
    except (TypeError, ValueError):
        return None


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
    colors = {}
    for item in ds.get("SegmentSequence", []):
        lab = item.get("RecommendedDisplayCIELabValue")
        rgb = None if lab is None else _lab_to_rgb(lab)
        if rgb is not None:
            colors[int(item.SegmentNumber)] = rgb
    return LabelVolume(labels, volume.affine, table, masks, tuple(warnings), colors)
