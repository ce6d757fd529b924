"""Queries: ``'Modality=CT StudyDate=20240101-20240131'`` -> identifiers -> typed Arrow tables.

C-FIND and QIDO-RS results are tables typed exactly like the catalog (:mod:`dicomflow.dicom`):
UIDs in the catalog's fixed columns (``study_instance_uid``...) so the two join, every other
attribute in a column named by its keyword with the dictionary's Arrow type.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_dict

from ..dicom import (
    ColumnSpec,
    ParsedHeader,
    column_array,
    encodings_of,
    parse_header,
    resolve_columns,
)
from ..errors import ConfigError
from ._matching import TEMPORAL_VRS, temporal_value

__all__ = [
    "LEVELS",
    "MODELS",
    "Query",
    "identifier",
    "keys_at_level",
    "level_keys",
    "parse_query",
    "results_table",
]

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
MODELS = ("study", "patient")

#: Return keys asked for by default at each level (besides the query's own keys).
LEVEL_KEYS: dict[str, tuple[str, ...]] = {
    "PATIENT": (
        "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
        "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    ),
    "STUDY": (
        "StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
        "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "StudyDescription",
        "ReferringPhysicianName", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    "SERIES": (
        "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
        "SeriesDescription", "SeriesDate", "SeriesTime", "BodyPartExamined",
        "NumberOfSeriesRelatedInstances",
    ),
    "IMAGE": (
        "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
        "InstanceNumber",
    ),
}  # fmt: skip

#: The level an attribute is matched at (Study Root); anything unlisted is matched as asked.
_KEY_LEVEL: dict[str, str] = {
    **{k: "PATIENT" for k in (
        "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID",
        "OtherPatientIDs", "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
    )},
    **{k: "STUDY" for k in (
        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
        "StudyDescription", "ReferringPhysicianName", "ModalitiesInStudy",
        "SOPClassesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
        "PatientAge", "PatientWeight", "PatientSize",
    )},
    **{k: "SERIES" for k in (
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
        "SeriesTime", "BodyPartExamined", "ProtocolName", "PerformedProcedureStepStartDate",
        "NumberOfSeriesRelatedInstances", "Manufacturer", "StationName", "InstitutionName",
    )},
    **{k: "IMAGE" for k in (
        "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ContentDate", "ContentTime",
        "AcquisitionNumber", "ImageType", "NumberOfFrames", "Rows", "Columns",
    )},
}  # fmt: skip

#: Catalog fixed columns standing for these attributes in query results.
UID_COLUMNS = {
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
}
_UID_COLUMNS_AT = {
    "PATIENT": (),
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"),
}

Query = Mapping[str, Any]


def parse_query(query: str | Query | None) -> dict[str, Any]:
    """``'Modality=CT StudyDate=20240101-20240131'`` (or a mapping) -> ``{keyword: value}``.

    Values follow DICOM matching: ``*``/``?`` wildcards, ``\\`` separated UID lists. Dates
    and times (DA, TM, DT keys) are given compact or in ISO form, ranges as ``A..B`` (or
    DICOM's ``A-B`` with compact values), and sent compact; any other form is refused (see
    :mod:`._matching`). A key without ``=`` is a return key (empty value). Quote values with
    spaces: ``"StudyDescription=CT CHEST"``.

    >>> parse_query("Modality=CT StudyDate=20240101-20240131")
    {'Modality': 'CT', 'StudyDate': '20240101-20240131'}
    >>> parse_query("StudyDate=2024-01-01..2024-01-31 StudyTime=08:00..")
    {'StudyDate': '20240101-20240131', 'StudyTime': '0800-'}
    """
    if query is None:
        return {}
    if isinstance(query, Mapping):
        items = list(query.items())
    else:
        items = []
        for token in shlex.split(query):
            key, sep, value = token.partition("=")
            items.append((key.strip(), value if sep else None))
    out: dict[str, Any] = {}
    for key, value in items:
        if key not in keyword_dict:
            raise ConfigError(f"query key {key!r} is not a DICOM keyword")
        if isinstance(value, (list, tuple)):
            value = "\\".join(str(v) for v in value)
        if value is not None and dictionary_VR(keyword_dict[key]) in TEMPORAL_VRS:
            value = temporal_value(key, dictionary_VR(keyword_dict[key]), value)
        out[key] = value
    return out


def check_level(level: str) -> str:
    upper = level.upper()
    if upper == "INSTANCE":
        upper = "IMAGE"
    if upper not in LEVELS:
        raise ConfigError(f"level {level!r}: expected one of patient, study, series, image")
    return upper


#: Keys of a lower level that the standard answers at a higher one under another keyword
#: (PS3.4 C.6.1.1.4: the study-level Modalities in Study and SOP Classes in Study).
_STANDS_FOR: dict[tuple[str, str], str] = {
    ("STUDY", "Modality"): "ModalitiesInStudy",
    ("STUDY", "SOPClassUID"): "SOPClassesInStudy",
}


def keys_at_level(query: Query, level: str, *, what: str = "query key") -> dict[str, Any]:
    """The keys of ``query`` as a peer can match them at ``level``: a lower level's key that
    has a study-level equivalent is mapped to it (``Modality`` -> ``ModalitiesInStudy``);
    any other key of a lower level is refused, since no answer at ``level`` has it (the
    query would silently match nothing, or everything). Keys of the level and above, and
    keys whose level is not known here, are kept.

    Raises
    ------
    ConfigError
        A key of a lower level without an equivalent; the message lists the known keys
        of ``level``.

    >>> keys_at_level({"Modality": "CT", "PatientID": "P1"}, "STUDY")
    {'ModalitiesInStudy': 'CT', 'PatientID': 'P1'}
    """
    order = LEVELS.index(level)
    out: dict[str, Any] = {}
    for key, value in query.items():
        at = _KEY_LEVEL.get(key)
        if at is not None and LEVELS.index(at) > order:
            mapped = _STANDS_FOR.get((level, key))
            if mapped is None:
                known = sorted(k for k, lvl in _KEY_LEVEL.items() if LEVELS.index(lvl) <= order)
                raise ConfigError(
                    f"{what} {key} is a {at.lower()}-level attribute: {level.lower()}-level "
                    f"answers do not have it (query at level {at.lower()}, or use a "
                    f"{level.lower()}-level key: {', '.join(known)})"
                )
            if mapped in query and query[mapped] != value:
                raise ConfigError(
                    f"{what}s {key} and {mapped} disagree: at {level.lower()} level {key} is "
                    f"matched as {mapped}; give one of them"
                )
            key = mapped
        out[key] = value
    return out


def level_keys(query: Query, level: str) -> dict[str, Any]:
    """The part of a query matched at ``level`` or above (Study Root: patient keys at study)."""
    order = LEVELS.index(level)
    out: dict[str, Any] = {}
    for key, value in query.items():
        at = _KEY_LEVEL.get(key, level)
        if LEVELS.index(at) <= order:
            out[key] = value
    if level == "STUDY" and "Modality" in query and "ModalitiesInStudy" not in out:
        out["ModalitiesInStudy"] = query["Modality"]
    return out


def identifier(
    level: str, query: Query, return_keys: Iterable[str] = (), *, model: str = "study"
) -> Dataset:
    """A C-FIND/C-MOVE/C-GET identifier: the level, the matching keys, empty return keys."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key in return_keys:
        if key not in query:
            setattr(ds, key, None)
    for key, value in query.items():
        if value is None or value == "":
            setattr(ds, key, None)
            continue
        vr = dictionary_VR(keyword_dict[key])
        if vr in ("US", "UL", "SS", "SL") and not isinstance(value, int):
            value = int(value)
        setattr(ds, key, value)
    if model == "patient" and level != "PATIENT" and "PatientID" not in query:
        ds.PatientID = None
    return ds


def result_specs(level: str, extra: Sequence[str] = ()) -> tuple[ColumnSpec, ...]:
    """Attribute column specs of a result table (UIDs excluded: they are fixed columns)."""
    keys = [k for k in (*LEVEL_KEYS[level], *extra) if k not in UID_COLUMNS]
    keys = [k for k in keys if k != "QueryRetrieveLevel"]
    return resolve_columns(list(dict.fromkeys(keys))) or ()


def results_schema(level: str, specs: Sequence[ColumnSpec]) -> pa.Schema:
    fields = [pa.field(UID_COLUMNS[k], pa.string()) for k in _UID_COLUMNS_AT[level]]
    fields += [pa.field(s.name, s.arrow_type) for s in specs]
    return pa.schema(fields)


def _header_of(ds: Dataset) -> ParsedHeader | None:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian = True
    buf.is_implicit_VR = False
    try:
        write_dataset(buf, ds)
        return parse_header(buf.getvalue(), complete=True)
    except Exception:  # noqa: BLE001 - an answer that does not re-encode becomes an all-null row
        return None


def results_table(
    level: str, answers: Sequence[Dataset | ParsedHeader | None], extra: Sequence[str] = ()
) -> pa.Table:
    """Query answers as an Arrow table typed like the catalog (one row per answer)."""
    specs = result_specs(level, extra)
    headers = [a if isinstance(a, ParsedHeader) or a is None else _header_of(a) for a in answers]
    encodings = [encodings_of(h) if h is not None else () for h in headers]
    arrays = []
    for key in _UID_COLUMNS_AT[level]:
        tag = keyword_dict[key]
        values = []
        for h in headers:
            raw = h.value(tag) if h is not None else None
            values.append(raw.decode("ascii", "replace").rstrip("\0 ") or None if raw else None)
        arrays.append(pa.array(values, pa.string()))
    arrays += [_empty_as_null(column_array(spec, headers, encodings)) for spec in specs]
    return pa.Table.from_arrays(arrays, schema=results_schema(level, specs))


def _empty_as_null(array: pa.Array) -> pa.Array:
    """An empty answer value means "unknown": null, as QIDO-RS (which omits it) gives."""
    if pa.types.is_string(array.type):
        import pyarrow.compute as pc

        return pc.if_else(pc.equal(array, ""), pa.scalar(None, array.type), array)
    return array
