"""Catalog rows to image planes: one record per frame, or per mosaic.

A classic single-frame object gives one plane from its catalog columns. An enhanced multi-frame
object gives one plane per frame, its attributes taken from the per-frame functional group, else
the shared one (PS3.3 C.7.6.16); its header is re-read with pydicom (header only). A Siemens mosaic
gives one record holding all its slices.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import fsspec
import numpy as np

from ._errors import PixelDataError
from ._frames import FrameTransform, PixelOptions, row_refs
from ._geometry import orientation_key
from ._locate import FrameRef
from ._siemens import MosaicInfo, mosaic_info

__all__ = ["NO_PIXEL_DATA", "Plane", "planes_from_rows", "read_header"]

#: The reason a catalog row without an image is skipped (not a failure: an SR, a KOS...).
NO_PIXEL_DATA = "no pixel data"


@dataclass(eq=False)
class Plane:
    """One image plane (or one mosaic) with what grouping, sorting and geometry need."""

    ref: FrameRef
    row: Mapping[str, Any]
    position: np.ndarray | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    slope: float = 1.0
    intercept: float = 0.0
    echo: tuple = ()
    image_type: tuple[str, ...] = ()
    temporal: float | None = None
    acquisition_time: float | None = None
    stack: tuple = ()
    mosaic: MosaicInfo | None = None
    window: tuple[float | None, float | None] = (None, None)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sop_instance_uid(self) -> str | None:
        return self.row.get("sop_instance_uid")

    def time_key(self) -> tuple:
        """Order of repeated acquisitions of one position (earliest first)."""
        return (
            _num(self.temporal),
            _num(self.row.get("AcquisitionNumber")),
            _num(self.acquisition_time),
            _num(self.row.get("InstanceNumber")),
            self.ref.uri,
            self.ref.index,
        )

    def transform(self, options: PixelOptions) -> FrameTransform | None:
        invert = (
            options.invert_monochrome1
            and str(self.row.get("PhotometricInterpretation") or "").upper() == "MONOCHROME1"
        )
        if not (options.modality_lut or invert):
            return None
        return FrameTransform(
            slope=self.slope,
            intercept=self.intercept,
            rescale=options.modality_lut,
            invert_bits=self.ref.fmt.bits_stored if invert else 0,
            signed=bool(self.ref.fmt.pixel_representation),
        )


def _num(value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def _floats(value, n: int | None = None) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split("\\")
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if n is not None and len(out) != n:
        return None
    return out if all(map(math.isfinite, out)) else None


def _pixel_spacing(value) -> tuple[tuple[float, float] | None, str | None]:
    """Pixel Spacing (row, column) in mm, or ``None`` with why it cannot be used: a spacing
    of zero or below (``0\\0`` is written by some converters and secondary captures) would
    make the grid degenerate, so it is treated as absent (1 mm assumed, with a warning)."""
    spacing = _floats(value, 2)
    if spacing is None:
        return None, None
    if min(spacing) <= 0:
        shown = "\\".join(f"{v:g}" for v in spacing)
        return None, f"Pixel Spacing {shown} is not a spacing: 1 mm assumed"
    return (spacing[0], spacing[1]), None


def _seconds(value) -> float | None:
    """DICOM TM / DT (or a time object) as seconds since midnight (date ignored)."""
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        value = value.time()
    if isinstance(value, _dt.time):
        return value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6
    text = str(value).strip()
    if len(text) >= 14 and text[:8].isdigit():  # DT: YYYYMMDDHHMMSS...
        text = text[8:]
    text = text.split("+")[0].split("-")[0].replace(":", "")
    try:
        hh = int(text[0:2])
        mm = int(text[2:4]) if len(text) >= 4 else 0
        ss = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hh * 3600 + mm * 60 + ss


def read_header(uri: str, storage_options: Mapping[str, Any] | None = None):
    """The header of one object (everything before Pixel Data), read by pydicom."""
    from pydicom import dcmread

    with fsspec.open(uri, "rb", **dict(storage_options or {})) as f:
        return dcmread(f, stop_before_pixels=True, force=True)


def _echo(row: Mapping[str, Any], echo_time=None) -> tuple:
    numbers = row.get("EchoNumbers")
    if isinstance(numbers, list | tuple):
        numbers = numbers[0] if numbers else None
    te = echo_time if echo_time is not None else row.get("EchoTime")
    return (
        None if numbers is None else int(_num(numbers)),
        None if te is None else round(_num(te), 3),
    )


def _image_type(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split("\\")
    return tuple(str(v).strip().upper() for v in value)


def _first(value):
    if isinstance(value, list | tuple):
        return value[0] if value else None
    return value


# The slices of a series share their orientation, spacing and format: each key part is worked
# out once per distinct value (numpy's rounding, as before), not once per slice.
@lru_cache(maxsize=1024)
def _orientation_part(orientation: tuple[float, ...]) -> tuple:
    return orientation_key(orientation) or ()


@lru_cache(maxsize=1024)
def _spacing_part(spacing: tuple[float, float]) -> tuple:
    return tuple(np.round(spacing, 4))


@lru_cache(maxsize=256)
def _format_part(fmt: Any) -> tuple:
    return fmt.frame_shape, str(fmt.dtype)


def _stack_key(row: Mapping[str, Any], plane: Plane) -> tuple:
    orientation = plane.orientation
    if orientation is None:
        orientation_part: tuple = ()
    elif isinstance(orientation, tuple):
        orientation_part = _orientation_part(orientation)
    else:
        orientation_part = orientation_key(orientation) or ()
    spacing = plane.pixel_spacing
    if spacing is not None and not isinstance(spacing, tuple):
        spacing = tuple(spacing)
    return (
        row.get("study_instance_uid") or "",
        row.get("series_instance_uid") or "",
        _num(row.get("SeriesNumber")),
        orientation_part,
        *_format_part(plane.ref.fmt),
        _spacing_part(spacing) if spacing is not None else (),
        plane.echo,
        # classic Image Type: values 1-3 (original/derived, primary/secondary, the modality's
        # kind: AXIAL, LOCALIZER, M, P...); vendors append free values (e.g. GE's ADD) per slice.
        # Enhanced Frame Type: all 4 (value 4 is the pixel contrast, e.g. M vs FIELD_MAP)
        plane.image_type if plane.extra.get("frame_type") else plane.image_type[:3],
        plane.extra.get("ComplexImageComponent", ""),
        (plane.mosaic.count, plane.mosaic.tile_rows) if plane.mosaic else (),
    )


def _classic_plane(row: Mapping[str, Any], ref: FrameRef) -> Plane:
    iop = _floats(row.get("ImageOrientationPatient"), 6)
    ipp = _floats(row.get("ImagePositionPatient"), 3)
    spacing, bad = _pixel_spacing(row.get("PixelSpacing"))
    if spacing is None and bad is None:
        spacing, bad = _pixel_spacing(row.get("ImagerPixelSpacing"))
    slope = _num(row.get("RescaleSlope")) if row.get("RescaleSlope") is not None else 1.0
    return Plane(
        ref=ref,
        row=row,
        position=None if ipp is None else np.array(ipp),
        orientation=None if iop is None else tuple(iop),
        pixel_spacing=spacing,
        extra={"pixel_spacing_problem": bad} if bad else {},
        slope=slope or 1.0,
        intercept=_num(row.get("RescaleIntercept")),
        echo=_echo(row),
        image_type=_image_type(row.get("ImageType")),
        temporal=row.get("TemporalPositionIdentifier"),
        acquisition_time=_seconds(row.get("AcquisitionTime") or row.get("ContentTime")),
        window=(_num(_first(row.get("WindowCenter"))) if row.get("WindowCenter") else None,
                _num(_first(row.get("WindowWidth"))) if row.get("WindowWidth") else None),
    )  # fmt: skip


def _group_item(frame_group, shared_group, sequence: str):
    for group in (frame_group, shared_group):
        if group is not None and sequence in group and len(group[sequence].value):
            return group[sequence].value[0]
    return None


def _enhanced_planes(row: Mapping[str, Any], refs: Sequence[FrameRef], ds) -> list[Plane]:
    top: dict[str, Any] = {
        k: str(ds.get(k))
        for k in ("MRAcquisitionType", "EchoPlanarPulseSequence", "ScanningSequence")
        if ds.get(k) is not None
    }
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    timing = _group_item(None, shared, "MRTimingAndRelatedParametersSequence")
    if timing is not None:
        for key in ("RepetitionTime", "FlipAngle"):
            if timing.get(key) is not None:
                top[key] = float(timing.get(key))
    planes = []
    for ref in refs:
        i = ref.index
        frame = per_frame[i] if per_frame is not None and i < len(per_frame) else None
        position = _group_item(frame, shared, "PlanePositionSequence")
        orientation = _group_item(frame, shared, "PlaneOrientationSequence")
        measures = _group_item(frame, shared, "PixelMeasuresSequence")
        transform = _group_item(frame, shared, "PixelValueTransformationSequence")
        content = _group_item(frame, shared, "FrameContentSequence")
        voi = _group_item(frame, shared, "FrameVOILUTSequence")
        echo_item = _group_item(frame, shared, "MREchoSequence")
        frame_type = None
        for seq in ("MRImageFrameTypeSequence", "CTImageFrameTypeSequence", "PETFrameTypeSequence"):
            frame_type = frame_type or _group_item(frame, shared, seq)
        ipp = _floats(position.get("ImagePositionPatient"), 3) if position else None
        iop = _floats(orientation.get("ImageOrientationPatient"), 6) if orientation else None
        spacing, bad = _pixel_spacing(measures.get("PixelSpacing") if measures else None)
        slope = _num(transform.get("RescaleSlope")) if transform else 0.0
        extra: dict[str, Any] = dict(top)
        if bad:
            extra["pixel_spacing_problem"] = bad
        if measures is not None:
            extra["SliceThickness"] = measures.get("SliceThickness")
            extra["SpacingBetweenSlices"] = measures.get("SpacingBetweenSlices")
        if frame_type is not None:
            extra["frame_type"] = True
            extra["ComplexImageComponent"] = str(frame_type.get("ComplexImageComponent", ""))
        if content is not None:
            extra["StackID"] = content.get("StackID")
            extra["InStackPositionNumber"] = content.get("InStackPositionNumber")
        echo_time = echo_item.get("EffectiveEchoTime") if echo_item else None
        image_type = _image_type(frame_type.get("FrameType") if frame_type else None)
        plane = Plane(
            ref=ref,
            row=row,
            position=None if ipp is None else np.array(ipp),
            orientation=None if iop is None else tuple(iop),
            pixel_spacing=spacing,
            slope=slope or 1.0,
            intercept=_num(transform.get("RescaleIntercept")) if transform else 0.0,
            echo=_echo(row, echo_time),
            image_type=image_type or _image_type(row.get("ImageType")),
            temporal=content.get("TemporalPositionIndex") if content else None,
            acquisition_time=_seconds(content.get("FrameAcquisitionDateTime")) if content else None,
            window=(
                _num(_first(voi.get("WindowCenter"))) if voi and voi.get("WindowCenter") else None,
                _num(_first(voi.get("WindowWidth"))) if voi and voi.get("WindowWidth") else None,
            ),
            extra=extra,
        )
        planes.append(plane)
    return planes


def _multiframe_planes(row: Mapping[str, Any], refs: Sequence[FrameRef], ds) -> list[Plane]:
    """Multi-frame objects without functional groups (RT Dose, NM, cine)."""
    base = _classic_plane(row, refs[0])
    count = refs[0].fmt.number_of_frames
    offsets = _floats(ds.get("GridFrameOffsetVector"), count) if ds else None
    planes = []
    for ref in refs:
        plane = _classic_plane(row, ref)
        if offsets is not None and base.position is not None and base.orientation is not None:
            normal = np.cross(base.orientation[:3], base.orientation[3:])
            plane.position = base.position + offsets[ref.index] * normal
        else:  # frames are a time series of one plane
            plane.temporal = float(ref.index)
        planes.append(plane)
    return planes


def planes_from_rows(
    rows: Sequence[Mapping[str, Any]],
    storage_options: Mapping[str, Any] | None = None,
    *,
    frames: Sequence[int] | None = None,
) -> tuple[list[Plane], list[tuple[str, str]]]:
    """Image planes of all rows, and ``(uri, reason)`` for rows that give none.

    ``frames``: only the planes of these frames of each row (0-based, in file order; indices
    past a row's frames are left out), so that one frame of a multi-frame object costs one
    plane, not one per frame (a million-frame object: a gigabyte).
    """
    planes: list[Plane] = []
    skipped: list[tuple[str, str]] = []
    for row in rows:
        uri = str(row.get("uri"))
        if row.get("pixel_offset") is None and row.get("error"):
            skipped.append((uri, f"catalog error: {row['error']}"))
            continue
        if row.get("pixel_offset") is None and not row.get("Rows"):
            skipped.append((uri, NO_PIXEL_DATA))
            continue
        try:
            refs = row_refs(row, storage_options)
            multiframe = len(refs) > 1
            if frames is not None:
                refs = [refs[i] for i in frames if 0 <= i < len(refs)]
                if not refs:
                    continue
            image_type = _image_type(row.get("ImageType"))
            if multiframe or "MOSAIC" in image_type:
                ds = read_header(uri, storage_options)
                if (
                    "PerFrameFunctionalGroupsSequence" in ds
                    or "SharedFunctionalGroupsSequence" in ds
                ):
                    new = _enhanced_planes(row, refs, ds)
                elif multiframe:
                    new = _multiframe_planes(row, refs, ds)
                else:
                    plane = _classic_plane(row, refs[0])
                    if plane.orientation is not None:
                        fmt = refs[0].fmt
                        plane.mosaic = mosaic_info(ds, fmt.rows, fmt.columns, plane.orientation)
                        if plane.mosaic and plane.position is not None and plane.pixel_spacing:
                            plane.position = plane.mosaic.first_position(
                                plane.position,
                                plane.orientation,
                                plane.pixel_spacing,
                                fmt.rows,
                                fmt.columns,
                            )
                    new = [plane]
            else:
                new = [_classic_plane(row, refs[0])]
        except PixelDataError as exc:
            skipped.append((uri, str(exc)))
            continue
        for plane in new:
            plane.stack = _stack_key(row, plane)
        planes.extend(new)
    return planes, skipped
