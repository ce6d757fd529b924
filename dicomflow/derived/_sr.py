"""SR TID 1500 measurement reports to measurement and qualitative-evaluation rows."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pydicom

from ..errors import DerivedObjectError

MEASUREMENT_SCHEMA = pa.schema(
    [
        ("SOPInstanceUID", pa.string()),
        ("StudyInstanceUID", pa.string()),
        ("group", pa.int32()),
        ("TrackingIdentifier", pa.string()),
        ("TrackingUID", pa.string()),
        ("Finding", pa.string()),
        ("FindingMeaning", pa.string()),
        ("FindingSite", pa.string()),
        ("FindingSiteMeaning", pa.string()),
        ("ConceptName", pa.string()),
        ("ConceptMeaning", pa.string()),
        ("value", pa.float64()),
        ("unit", pa.string()),
        ("unit_meaning", pa.string()),
        ("Derivation", pa.string()),
        ("ReferencedSOPInstanceUID", pa.string()),
        ("ReferencedSegmentNumber", pa.int32()),
        ("ReferencedFrameNumbers", pa.list_(pa.int32())),
        ("ObserverName", pa.string()),
    ]
)

EVALUATION_SCHEMA = pa.schema(
    [
        ("SOPInstanceUID", pa.string()),
        ("StudyInstanceUID", pa.string()),
        ("group", pa.int32()),
        ("TrackingIdentifier", pa.string()),
        ("TrackingUID", pa.string()),
        ("Finding", pa.string()),
        ("FindingMeaning", pa.string()),
        ("ConceptName", pa.string()),
        ("ConceptMeaning", pa.string()),
        ("value", pa.string()),
        ("value_meaning", pa.string()),
        ("ObserverName", pa.string()),
    ]
)

# (scheme, value) of the concepts TID 1500 and its sub-templates use
MEASUREMENT_GROUP = ("DCM", "125007")
TRACKING_ID = ("DCM", "112039")
TRACKING_UID = ("DCM", "112040")
FINDING = ("DCM", "121071")
FINDING_SITES = (("SCT", "363698007"), ("SRT", "G-C0E3"))
DERIVATION = ("DCM", "121401")
PERSON_OBSERVER = ("DCM", "121008")
QUALITATIVE = ("DCM", "C0034375")  # the container of qualitative evaluations
REFERENCED_SEGMENT = ("DCM", "121191")
SOURCE_OF_MEASUREMENT = ("DCM", "121112")


def _name(item: Any) -> tuple[str, str] | None:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    c = seq[0]
    return (str(c.get("CodingSchemeDesignator", "")), str(c.get("CodeValue", "")))


def _code_text(seq: Any) -> tuple[str | None, str | None]:
    if not seq:
        return None, None
    c = seq[0]
    return f"{c.get('CodingSchemeDesignator', '')}:{c.get('CodeValue', '')}", c.get("CodeMeaning")


def _children(item: Any) -> list[Any]:
    return list(item.get("ContentSequence", []))


def _walk(item: Any):
    yield item
    for child in _children(item):
        yield from _walk(child)


def _references(item: Any) -> tuple[str | None, int | None, list[int] | None]:
    """Referenced instance, segment and frames of an IMAGE or reference item below ``item``."""
    for node in _walk(item):
        for ref in node.get("ReferencedSOPSequence", []):
            seg = ref.get("ReferencedSegmentNumber")
            frames = ref.get("ReferencedFrameNumber")
            if frames is not None and not isinstance(frames, list | pydicom.multival.MultiValue):
                frames = [frames]
            return (
                str(ref.ReferencedSOPInstanceUID),
                None if seg is None else int(seg),
                None if frames is None else [int(f) for f in frames],
            )
    return None, None, None


def read_measurements(sr: Any) -> tuple[pa.Table, pa.Table]:
    """The measurements and qualitative evaluations of a TID 1500 Measurement Report.

    Returns two Arrow tables (``MEASUREMENT_SCHEMA``, ``EVALUATION_SCHEMA``): one row per
    numeric measurement and per coded evaluation of each measurement group, with the group's
    tracking identifier and UID, finding and finding site, and the instance (and segment or
    frames) it was measured on; they join the catalog on ``ReferencedSOPInstanceUID`` and the
    report's own ``SOPInstanceUID``.
    """
    ds = sr if isinstance(sr, pydicom.Dataset) else pydicom.dcmread(sr)
    if ds.get("Modality") != "SR":
        raise DerivedObjectError(f"not an SR: Modality {ds.get('Modality')!r}")
    observer = None
    for child in _children(ds):
        if _name(child) == PERSON_OBSERVER:
            observer = str(child.get("PersonName", "")) or None
    base = {
        "SOPInstanceUID": str(ds.SOPInstanceUID),
        "StudyInstanceUID": ds.get("StudyInstanceUID"),
    }
    measurements: list[dict[str, Any]] = []
    evaluations: list[dict[str, Any]] = []
    groups = [
        n for n in _walk(ds) if n.get("ValueType") == "CONTAINER" and _name(n) == MEASUREMENT_GROUP
    ]
    for g, group in enumerate(groups, start=1):
        ctx: dict[str, Any] = {**base, "group": g, "ObserverName": observer}
        ctx.update(TrackingIdentifier=None, TrackingUID=None, Finding=None, FindingMeaning=None)
        site: tuple[str | None, str | None] = (None, None)
        group_ref = _references_of_group(group)
        for child in _children(group):
            name = _name(child)
            if name == TRACKING_ID:
                ctx["TrackingIdentifier"] = child.get("TextValue")
            elif name == TRACKING_UID:
                ctx["TrackingUID"] = child.get("UID")
            elif name == FINDING:
                ctx["Finding"], ctx["FindingMeaning"] = _code_text(child.get("ConceptCodeSequence"))
            elif name in FINDING_SITES:
                site = _code_text(child.get("ConceptCodeSequence"))
        for child in _children(group):
            vt = child.get("ValueType")
            concept, meaning = _code_text(child.get("ConceptNameCodeSequence"))
            if vt == "NUM":
                mv = (child.get("MeasuredValueSequence") or [None])[0]
                unit, unit_m = _code_text(mv.get("MeasurementUnitsCodeSequence") if mv else None)
                derivation = None
                for sub in _children(child):
                    if _name(sub) == DERIVATION:
                        derivation = _code_text(sub.get("ConceptCodeSequence"))[1]
                ref = _references(child)
                if ref[0] is None:
                    ref = group_ref
                measurements.append(
                    {
                        **ctx,
                        "FindingSite": site[0],
                        "FindingSiteMeaning": site[1],
                        "ConceptName": concept,
                        "ConceptMeaning": meaning,
                        "value": _number(mv),
                        "unit": None if unit is None else unit.split(":", 1)[1],
                        "unit_meaning": unit_m,
                        "Derivation": derivation,
                        "ReferencedSOPInstanceUID": ref[0],
                        "ReferencedSegmentNumber": ref[1],
                        "ReferencedFrameNumbers": ref[2],
                    }
                )
            elif vt == "CODE" and _name(child) not in (FINDING, *FINDING_SITES):
                value, value_m = _code_text(child.get("ConceptCodeSequence"))
                row = {k: ctx[k] for k in EVALUATION_SCHEMA.names if k in ctx}
                row.update(
                    ConceptName=concept, ConceptMeaning=meaning, value=value, value_meaning=value_m
                )
                evaluations.append(row)
    return (
        pa.Table.from_pylist(measurements, schema=MEASUREMENT_SCHEMA),
        pa.Table.from_pylist(evaluations, schema=EVALUATION_SCHEMA),
    )


def _number(mv: Any) -> float | None:
    """The measured value: Floating Point Value (FD, exact) where present, else the DS text."""
    if mv is None:
        return None
    exact = mv.get("FloatingPointValue")
    return float(exact) if exact is not None else float(mv.NumericValue)


def _references_of_group(group: Any) -> tuple[str | None, int | None, list[int] | None]:
    """The segment or source image a whole group was measured on (its direct children)."""
    for child in _children(group):
        if _name(child) in (REFERENCED_SEGMENT, SOURCE_OF_MEASUREMENT) or child.get(
            "ValueType"
        ) in ("IMAGE",):
            ref = _references(child)
            if ref[0] is not None:
                return ref
    return None, None, None
