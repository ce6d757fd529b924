"""Catalog columns: which attributes, and their Arrow types from the DICOM data dictionary.

The Arrow type of an attribute column depends only on the dictionary's VR and VM for its tag,
never on the data, so every batch of every crawl has the same schema.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa
from pydicom.datadict import (
    DicomDictionary,
    get_private_entry,
    keyword_dict,
)

from ..errors import ConfigError

__all__ = [
    "DEFAULT_COLUMNS",
    "FIXED_SCHEMA",
    "ColumnSpec",
    "catalog_schema",
    "private_column",
    "resolve_columns",
    "specs_for_tags",
]

#: Columns every catalog has, in this order.
FIXED_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("modified", pa.timestamp("us", tz="UTC")),  # the object's modification time
        ("transfer_syntax_uid", pa.string()),
        ("sop_class_uid", pa.string()),
        ("sop_instance_uid", pa.string()),
        ("study_instance_uid", pa.string()),
        ("series_instance_uid", pa.string()),
        ("pixel_offset", pa.int64()),
        ("pixel_length", pa.int64()),
        ("number_of_frames", pa.int32()),
        ("error", pa.string()),
    ]
)

#: About 70 attributes people filter on: identity, acquisition, geometry, pixel description.
DEFAULT_COLUMNS: tuple[str, ...] = (
    # patient / study / series
    "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "PatientSize",
    "StudyDate", "StudyTime", "StudyDescription", "AccessionNumber", "StudyID",
    "ReferringPhysicianName",
    "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate", "SeriesTime",
    "BodyPartExamined", "ProtocolName", "PatientPosition", "FrameOfReferenceUID",
    # equipment
    "Manufacturer", "ManufacturerModelName", "InstitutionName", "StationName",
    "DeviceSerialNumber", "SoftwareVersions",
    # instance
    "SpecificCharacterSet", "ImageType", "InstanceNumber", "AcquisitionNumber",
    "ContentDate", "ContentTime", "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime",
    "BurnedInAnnotation", "LossyImageCompression",
    # image plane
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness",
    "SpacingBetweenSlices", "SliceLocation",
    # image pixel / presentation
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration",
    "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
    "RescaleSlope", "RescaleIntercept", "RescaleType", "WindowCenter", "WindowWidth",
    # CT / MR / timing
    "KVP", "ConvolutionKernel", "GantryDetectorTilt", "ContrastBolusAgent",
    "MagneticFieldStrength", "EchoTime", "RepetitionTime", "FlipAngle", "EchoNumbers",
    "ScanningSequence", "TemporalPositionIdentifier",
)  # fmt: skip

# VR -> Arrow type of one value. Text VRs not listed here are strings.
_VALUE_TYPES: dict[str, pa.DataType] = {
    "DA": pa.date32(),
    "TM": pa.time64("us"),
    "DT": pa.timestamp("us"),
    "IS": pa.int64(),
    "DS": pa.float64(),
    "US": pa.uint16(),
    "SS": pa.int16(),
    "UL": pa.uint32(),
    "SL": pa.int32(),
    "UV": pa.uint64(),
    "SV": pa.int64(),
    "FL": pa.float32(),
    "FD": pa.float64(),
    "US or SS": pa.int32(),
    "OB": pa.binary(),
    "OW": pa.binary(),
    "OD": pa.binary(),
    "OF": pa.binary(),
    "OL": pa.binary(),
    "OV": pa.binary(),
    "UN": pa.binary(),
    "OB or OW": pa.binary(),
    "US or OW": pa.binary(),
    "US or SS or OW": pa.binary(),
    "NONE": pa.binary(),
    "SQ": pa.string(),  # DICOM JSON (PS3.18 F.2) of the sequence's items
}
_BINARY_VRS = frozenset(k for k, v in _VALUE_TYPES.items() if v == pa.binary())
_PRIVATE_RE = re.compile(r"^(?P<creator>.+):(?P<group>[0-9A-Fa-f]{4})xx(?P<offset>[0-9A-Fa-f]{2})$")
_TAG_RE = re.compile(r"^\(?(?P<group>[0-9A-Fa-f]{4}),?(?P<elem>[0-9A-Fa-f]{4})\)?$")


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One attribute column: its name, where its value lives, and how it is typed.

    ``tag`` is the public tag, or for a private column the (group, element offset) with the
    private creator in ``creator``; ``vr`` is the dictionary VR used for typing and decoding.
    """

    name: str
    tag: int
    vr: str
    multi: bool
    creator: str | None = None

    @property
    def arrow_type(self) -> pa.DataType:
        value = _VALUE_TYPES.get(self.vr, pa.string())
        if self.multi and self.vr not in _BINARY_VRS and self.vr != "SQ":
            return pa.list_(value)
        return value


def private_column(creator: str, group: int, offset: int) -> str:
    """Name of the column of a private attribute, addressed by its creator and element offset.

    Examples
    --------
    >>> private_column("SIEMENS CSA HEADER", 0x0029, 0x10)
    'SIEMENS CSA HEADER:0029xx10'
    """
    if group % 2 == 0:
        raise ConfigError(f"group {group:04X} is not a private (odd) group")
    return f"{creator}:{group:04X}xx{offset & 0xFF:02X}"


def _is_multi(vm: str) -> bool:
    return vm != "1"


def _public_spec(tag: int, name: str | None = None) -> ColumnSpec:
    vr, vm, _, _, keyword = DicomDictionary[tag]
    return ColumnSpec(name or keyword or f"{tag:08X}", tag, vr, _is_multi(vm))


def _spec_for(name: str) -> ColumnSpec:
    tag = keyword_dict.get(name)
    if tag is not None:
        return _public_spec(tag)
    match = _PRIVATE_RE.match(name)
    if match:
        creator = match["creator"]
        group, offset = int(match["group"], 16), int(match["offset"], 16)
        if group % 2 == 0:
            raise ConfigError(f"private column {name!r}: group {group:04X} is not odd")
        try:
            vr, vm, *_ = get_private_entry((group << 16) | 0x1000 | offset, creator)
        except KeyError:
            vr, vm = "UN", "1"  # unknown to the private dictionary: the raw bytes
        canonical = private_column(creator, group, offset)
        return ColumnSpec(canonical, (group << 16) | offset, vr, _is_multi(vm), creator)
    match = _TAG_RE.match(name)
    if match:
        tag = (int(match["group"], 16) << 16) | int(match["elem"], 16)
        if tag in DicomDictionary:
            return _public_spec(tag)
        raise ConfigError(
            f"column {name!r}: tag {tag:08X} is not in the public dictionary; name private "
            "attributes by creator, e.g. 'SIEMENS CSA HEADER:0029xx10'"
        )
    raise ConfigError(
        f"unknown column {name!r}: expected a DICOM keyword (e.g. 'PatientID'), a tag "
        "('(0010,0020)'), or a private attribute as 'CREATOR:ggggxxee'"
    )


_FIXED_ATTRIBUTES = {
    "TransferSyntaxUID",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "NumberOfFrames",
}


def resolve_columns(columns: str | Sequence[str] | None) -> tuple[ColumnSpec, ...] | None:
    """Turn the user's ``columns=`` choice into column specs.

    ``None`` or ``"default"`` gives :data:`DEFAULT_COLUMNS`; ``"all"`` returns ``None``
    (every public attribute present, decided per batch); a list names keywords, tags or
    private attributes. Attributes already held by a fixed column are not repeated.
    """
    if columns is None or columns == "default":
        names: Iterable[str] = DEFAULT_COLUMNS
    elif columns == "all":
        return None
    elif isinstance(columns, str):
        # commas separate names, except inside a parenthesised tag such as "(0018,0050)"
        names = [c.strip() for c in re.findall(r"\([^)]*\)|[^,]+", columns) if c.strip()]
    else:
        names = columns
    specs: dict[str, ColumnSpec] = {}
    for name in names:
        spec = _spec_for(name)
        if spec.name in _FIXED_ATTRIBUTES:
            continue
        specs.setdefault(spec.name, spec)
    return tuple(specs.values())


def specs_for_tags(tags: Iterable[int]) -> tuple[ColumnSpec, ...]:
    """Column specs for public tags found in data (``columns="all"``), in tag order."""
    out = []
    for tag in sorted(set(tags)):
        entry = DicomDictionary.get(tag)
        if entry is None or tag >> 16 == 0x0002 or not entry[4]:
            continue
        if entry[4] in _FIXED_ATTRIBUTES or tag >> 16 in (0x7FE0, 0xFFFE):
            continue
        out.append(_public_spec(tag))
    return tuple(out)


def catalog_schema(specs: Sequence[ColumnSpec], *, header: str | None = None) -> pa.Schema:
    """The Arrow schema of a catalog with these attribute columns."""
    fields = list(FIXED_SCHEMA)
    fields += [pa.field(s.name, s.arrow_type) for s in specs]
    if header == "json":
        fields.append(pa.field("header", pa.string()))
    elif header == "raw":
        fields.append(pa.field("header", pa.binary()))
    elif header is not None:
        raise ConfigError(f"header={header!r}: expected None, 'json' or 'raw'")
    return pa.schema(fields)
