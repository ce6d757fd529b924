"""DICOMDIR directory records (PS3.3 F.5): the record type of each instance, the keys each
record copies, their order, and the encoded DICOMDIR with its record offsets."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian

from ..dicom import file_meta
from ..errors import MediaSetError

#: Media Storage Directory Storage: the SOP Class of a DICOMDIR
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# Directory record keys (PS3.3 F.5): (keyword, type). "1": required with a value; "2": required,
# may be empty; "1C": copied when the instance has it (the condition holds when it does).
_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "PATIENT": (("PatientName", "2"), ("PatientID", "1")),
    "STUDY": (
        ("StudyDate", "1"),
        ("StudyTime", "1"),
        ("AccessionNumber", "2"),
        ("StudyDescription", "2"),
        ("StudyInstanceUID", "1"),
        ("StudyID", "1"),
    ),
    "SERIES": (("Modality", "1"), ("SeriesInstanceUID", "1"), ("SeriesNumber", "1")),
    "IMAGE": (("InstanceNumber", "1"),),
    "RT DOSE": (("InstanceNumber", "1"), ("DoseSummationType", "1")),
    "RT STRUCTURE SET": (
        ("InstanceNumber", "1"),
        ("StructureSetLabel", "1"),
        ("StructureSetDate", "2"),
        ("StructureSetTime", "2"),
    ),
    "RT PLAN": (
        ("InstanceNumber", "1"),
        ("RTPlanLabel", "1"),
        ("RTPlanDate", "2"),
        ("RTPlanTime", "2"),
    ),
    "RT TREAT RECORD": (("InstanceNumber", "1"), ("TreatmentDate", "2"), ("TreatmentTime", "2")),
    "PRESENTATION": (
        ("PresentationCreationDate", "1"),
        ("PresentationCreationTime", "1"),
        ("InstanceNumber", "1"),
        ("ContentLabel", "1"),
        ("ContentDescription", "2"),
        ("ContentCreatorName", "2"),
        ("ReferencedSeriesSequence", "1C"),
        ("BlendingSequence", "1C"),
    ),
    "WAVEFORM": (("InstanceNumber", "1"), ("ContentDate", "1"), ("ContentTime", "1")),
    "SR DOCUMENT": (
        ("InstanceNumber", "1"),
        ("CompletionFlag", "1"),
        ("VerificationFlag", "1"),
        ("ContentDate", "1"),
        ("ContentTime", "1"),
        ("ConceptNameCodeSequence", "1"),
    ),
    "KEY OBJECT DOC": (
        ("InstanceNumber", "1"),
        ("ContentDate", "1"),
        ("ContentTime", "1"),
        ("ConceptNameCodeSequence", "1"),
    ),
    "SPECTROSCOPY": (
        ("ImageType", "1"),
        ("ContentDate", "1"),
        ("ContentTime", "1"),
        ("InstanceNumber", "1"),
        ("ReferencedImageEvidenceSequence", "1C"),
        ("NumberOfFrames", "1"),
        ("Rows", "1"),
        ("Columns", "1"),
        ("DataPointRows", "1"),
        ("DataPointColumns", "1"),
    ),
    "RAW DATA": (("ContentDate", "1"), ("ContentTime", "1"), ("InstanceNumber", "2")),
    "ENCAP DOC": (
        ("ContentDate", "2"),
        ("ContentTime", "2"),
        ("InstanceNumber", "1"),
        ("DocumentTitle", "2"),
        ("HL7InstanceIdentifier", "1C"),
        ("ConceptNameCodeSequence", "2"),
        ("MIMETypeOfEncapsulatedDocument", "1"),
    ),
    "MEASUREMENT": (
        ("ContentDate", "1"),
        ("ContentTime", "1"),
        ("InstanceNumber", "1"),
        ("ConceptNameCodeSequence", "1"),
    ),
    "STEREOMETRIC": (),
    "SURFACE SCAN": (("ContentDate", "1"), ("ContentTime", "1")),
    "ASSESSMENT": (("InstanceNumber", "1"), ("InstanceCreationDate", "1")),
    "PALETTE": (("ContentLabel", "1"), ("ContentDescription", "2")),
}
_LABELLED = (
    ("ContentDate", "1"),
    ("ContentTime", "1"),
    ("InstanceNumber", "1"),
    ("ContentLabel", "1"),
    ("ContentDescription", "2"),
    ("ContentCreatorName", "2"),
)
for _type in ("REGISTRATION", "FIDUCIAL", "VALUE MAP", "SURFACE", "TRACT"):
    _KEYS[_type] = _LABELLED

#: record types that sit at the root of the directory, not under a SERIES
_ROOT_TYPES = frozenset({"PALETTE"})

# SOP Class keyword (as pydicom names PS3.6's UIDs) -> record type, where no rule below says it
_RECORD_BY_KEYWORD = {
    "RTDoseStorage": "RT DOSE",
    "RTStructureSetStorage": "RT STRUCTURE SET",
    "RTPlanStorage": "RT PLAN",
    "RTIonPlanStorage": "RT PLAN",
    "RTBeamsTreatmentRecordStorage": "RT TREAT RECORD",
    "RTBrachyTreatmentRecordStorage": "RT TREAT RECORD",
    "RTTreatmentSummaryRecordStorage": "RT TREAT RECORD",
    "RTIonBeamsTreatmentRecordStorage": "RT TREAT RECORD",
    "BasicStructuredDisplayStorage": "PRESENTATION",
    "ProcedureLogStorage": "SR DOCUMENT",
    "SpectaclePrescriptionReportStorage": "SR DOCUMENT",
    "MacularGridThicknessAndVolumeReportStorage": "SR DOCUMENT",
    "KeyObjectSelectionDocumentStorage": "KEY OBJECT DOC",
    "MRSpectroscopyStorage": "SPECTROSCOPY",
    "RawDataStorage": "RAW DATA",
    "SpatialRegistrationStorage": "REGISTRATION",
    "DeformableSpatialRegistrationStorage": "REGISTRATION",
    "SpatialFiducialsStorage": "FIDUCIAL",
    "RealWorldValueMappingStorage": "VALUE MAP",
    "StereometricRelationshipStorage": "STEREOMETRIC",
    "SurfaceSegmentationStorage": "SURFACE",
    "SurfaceScanMeshStorage": "SURFACE SCAN",
    "SurfaceScanPointCloudStorage": "SURFACE SCAN",
    "TractographyResultsStorage": "TRACT",
    "ContentAssessmentResultsStorage": "ASSESSMENT",
    "ColorPaletteStorage": "PALETTE",
}
# families of SOP Class keywords: (suffix or prefix, record type)
_RECORD_BY_SUFFIX = (
    ("SRStorage", "SR DOCUMENT"),
    ("WaveformStorage", "WAVEFORM"),
    ("PresentationStateStorage", "PRESENTATION"),
    ("MeasurementsStorage", "MEASUREMENT"),
)
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)

# Type 1 keys an instance may lack: related attributes to take instead, then a placeholder
# (a Study ID is made from the Study Instance UID, so that different studies stay apart).
_FALLBACKS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "StudyID": (("AccessionNumber",), None),
    "StudyDate": (("SeriesDate", "AcquisitionDate", "ContentDate"), "19000101"),
    "StudyTime": (("SeriesTime", "AcquisitionTime", "ContentTime"), "000000"),
    "ContentDate": (("InstanceCreationDate", "SeriesDate", "StudyDate"), "19000101"),
    "ContentTime": (("InstanceCreationTime", "SeriesTime", "StudyTime"), "000000"),
    "PresentationCreationDate": (("InstanceCreationDate", "ContentDate"), "19000101"),
    "PresentationCreationTime": (("InstanceCreationTime", "ContentTime"), "000000"),
    "InstanceCreationDate": (("ContentDate", "SeriesDate", "StudyDate"), "19000101"),
    "Modality": ((), "OT"),
    "SeriesNumber": ((), "0"),
    "InstanceNumber": ((), "0"),
    "CompletionFlag": ((), "PARTIAL"),
    "VerificationFlag": ((), "UNVERIFIED"),
    "ContentLabel": ((), "UNNAMED"),
    "StructureSetLabel": ((), "UNNAMED"),
    "RTPlanLabel": ((), "UNNAMED"),
}


def record_type_for(ds: Dataset) -> str:
    """The directory record type (PS3.3 F.5) of an instance, from its SOP Class.

    Image SOP Classes, and any other instance with pixel data, are ``IMAGE``.

    Raises
    ------
    MediaSetError
        The SOP Class has no record type this writer supports (e.g. Hanging Protocol,
        Implant Templates, second-generation RT objects).

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    >>> record_type_for(ds)
    'RT DOSE'
    """
    uid = UID(str(ds.get("SOPClassUID", "") or "").strip())
    if not uid:
        raise MediaSetError("an instance in a media set needs SOPClassUID")
    keyword = uid.keyword
    if keyword in _RECORD_BY_KEYWORD:
        return _RECORD_BY_KEYWORD[keyword]
    for suffix, record_type in _RECORD_BY_SUFFIX:
        if keyword.endswith(suffix):
            return record_type
    if keyword.startswith("Encapsulated") and keyword.endswith("Storage"):
        return "ENCAP DOC"
    if "ImageStorage" in keyword or any(tag in ds for tag in _PIXEL_TAGS):
        return "IMAGE"
    name = f"{uid.name} ({uid})" if keyword else repr(str(uid))
    raise MediaSetError(f"SOP Class {name} has no directory record type this writer supports")


def _hash36(text: str, length: int) -> str:
    number = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:12], "big")
    digits = []
    for _ in range(length):
        number, rest = divmod(number, 36)
        digits.append(_BASE36[rest])
    return "".join(digits)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _patient_key(ds: Dataset) -> str:
    """What groups instances into one PATIENT record: the Patient ID, else the name."""
    patient_id = _text(ds, "PatientID")
    return f"ID {patient_id}" if patient_id else f"NAME {_text(ds, 'PatientName')}"


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"{keyword} is not a DICOM keyword")
    return tag


def _element(ds: Dataset, keyword: str) -> DataElement | None:
    """A copy of a non-empty element of ``ds``, else None."""
    tag = _tag(keyword)
    if tag not in ds:
        return None
    elem = ds[tag]
    if elem.VR == "SQ":
        return copy.deepcopy(elem) if len(elem.value) else None
    if elem.value is None or elem.value == "" or elem.value == []:
        return None
    return copy.deepcopy(elem)


def _put(record: Dataset, ds: Dataset, keys: Iterable[tuple[str, str]], what: str) -> None:
    for keyword, kind in keys:
        elem = _element(ds, keyword)
        if elem is None and kind == "1":
            alternates, placeholder = _FALLBACKS.get(keyword, ((), None))
            if keyword == "StudyID":
                placeholder = "S" + _hash36(_text(ds, "StudyInstanceUID"), 10)
            found = (_element(ds, k) for k in alternates)
            elem = next((e for e in found if e is not None), None)
            tag = _tag(keyword)
            if elem is not None:
                elem = DataElement(tag, dictionary_VR(tag), elem.value)
            elif placeholder is not None:
                elem = DataElement(tag, dictionary_VR(tag), placeholder)
            else:
                raise MediaSetError(f"{what}: {keyword} is required in its directory record")
        if elem is None and kind == "2":
            tag = _tag(keyword)
            vr = dictionary_VR(tag)
            elem = DataElement(tag, vr, [] if vr == "SQ" else None)
        if elem is not None:
            record[elem.tag] = elem


def _charset(record: Dataset, ds: Dataset) -> None:
    """Specific Character Set (1C): when a text key holds more than ASCII."""
    charset = ds.get("SpecificCharacterSet")
    if not charset:
        return
    for elem in record.iterall():
        if elem.VR in ("PN", "LO", "SH", "LT", "ST", "UT", "UC") and elem.value:
            if not str(elem.value).isascii():
                record.SpecificCharacterSet = copy.deepcopy(charset)
                return


def _record(record_type: str, ds: Dataset, what: str) -> Dataset:
    record = Dataset()
    record.OffsetOfTheNextDirectoryRecord = 0
    record.RecordInUseFlag = 0xFFFF
    record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
    record.DirectoryRecordType = record_type
    _put(record, ds, _KEYS[record_type], what)
    _charset(record, ds)
    return record


def patient_record(ds: Dataset) -> Dataset:
    """The PATIENT record for an instance (a Patient ID is made up when it has none)."""
    source = ds
    if not _text(ds, "PatientID"):
        source = Dataset()
        source.update(ds.group_dataset(0x0010))
        source.PatientID = "DFL_" + _hash36(_patient_key(ds), 12)
        if "SpecificCharacterSet" in ds:
            source.SpecificCharacterSet = ds.SpecificCharacterSet
    return _record("PATIENT", source, "PATIENT")


def leaf_record(ds: Dataset, record_type: str, file_id: tuple[str, ...], ts: str) -> Dataset:
    """The record that references one instance's file, with the keys its type requires."""
    what = f"SOP Instance {_text(ds, 'SOPInstanceUID')}"
    record = _record(record_type, ds, what)
    record.ReferencedFileID = list(file_id)
    record.ReferencedSOPClassUIDInFile = _text(ds, "SOPClassUID")
    record.ReferencedSOPInstanceUIDInFile = _text(ds, "SOPInstanceUID")
    record.ReferencedTransferSyntaxUIDInFile = ts or ExplicitVRLittleEndian
    related = ds.get("RelatedGeneralSOPClassUID")
    if related:
        record.ReferencedRelatedGeneralSOPClassUIDInFile = copy.deepcopy(related)
    if record_type == "SR DOCUMENT" and _text(ds, "VerificationFlag") == "VERIFIED":
        observers = ds.get("VerifyingObserverSequence", [])
        times = [str(item.get("VerificationDateTime", "")) for item in observers]
        if any(times):  # 1C: the latest verification
            record.VerificationDateTime = max(times)
    if record_type in ("SR DOCUMENT", "KEY OBJECT DOC"):
        # 1C: the items that modify the document title (HAS CONCEPT MOD), and only those
        items = [
            copy.deepcopy(item)
            for item in ds.get("ContentSequence", [])
            if str(item.get("RelationshipType", "")).strip() == "HAS CONCEPT MOD"
        ]
        if items:
            record.ContentSequence = items
    return record


def _number(record: Dataset, keyword: str) -> int:
    try:
        return int(str(record.get(keyword, "")).strip())
    except ValueError:
        return 2**31


def _order(record: Dataset) -> tuple[Any, ...]:
    """Where a record goes among its siblings: by ID, date, number, then UID."""
    kind = str(record.DirectoryRecordType)
    if kind == "PATIENT":
        return (0, _text(record, "PatientID"))
    if kind == "STUDY":
        keys = ("StudyDate", "StudyTime", "StudyInstanceUID")
        return tuple(_text(record, k) for k in keys)
    if kind == "SERIES":
        return (_number(record, "SeriesNumber"), _text(record, "SeriesInstanceUID"))
    uid = _text(record, "ReferencedSOPInstanceUIDInFile")
    return (1 if kind in _ROOT_TYPES else 0, kind, _number(record, "InstanceNumber"), uid)


@dataclass
class _Node:
    """One directory record and the records of its lower-level entity."""

    record: Dataset
    children: list[_Node] = field(default_factory=list)
    index: dict[str, _Node] = field(default_factory=dict)

    def child(self, key: str, kind: str, ds: Dataset) -> _Node:
        """The child record for ``key``, made from ``ds`` the first time it is asked for."""
        node = self.index.get(key)
        if node is None:
            record = patient_record(ds) if kind == "PATIENT" else _record(kind, ds, kind)
            node = self.index[key] = _Node(record)
            self.children.append(node)
        return node

    def sort(self) -> None:
        self.children.sort(key=lambda n: _order(n.record))
        for node in self.children:
            node.sort()


def _encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def _head(fileset_id: str, uid: str, first: int, last: int) -> bytes:
    """Preamble, ``DICM``, File Meta Information and the elements before the records."""
    meta = file_meta(DICOMDIR_SOP_CLASS, uid, ExplicitVRLittleEndian)
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    top = Dataset()
    top.FileSetID = fileset_id
    top.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = first
    top.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = last
    top.FileSetConsistencyFlag = 0
    return fp.getvalue() + _encode(top)


_SEQUENCE_HEADER = b"\x04\x00\x20\x12SQ\x00\x00"  # (0004,1220) SQ, explicit VR little endian
_ITEM = b"\xfe\xff\x00\xe0"  # (FFFE,E000)


def encode_dicomdir(roots: list[_Node], fileset_id: str, uid: str) -> bytes:
    """The DICOMDIR file: records in depth-first order, each offset the byte position of the
    Item tag of the record it points to, counted from the first byte of the file (PS3.3 F.3.2.1).
    """
    flat: list[_Node] = []
    links: list[tuple[_Node, _Node | None]] = []

    def visit(siblings: list[_Node]) -> None:
        for i, node in enumerate(siblings):
            flat.append(node)
            links.append((node, siblings[i + 1] if i + 1 < len(siblings) else None))
            visit(node.children)

    visit(roots)
    position = len(_head(fileset_id, uid, 0, 0)) + len(_SEQUENCE_HEADER) + 4
    offsets: dict[int, int] = {}
    for node in flat:
        offsets[id(node)] = position
        position += 8 + len(_encode(node.record))
    for node, following in links:
        node.record.OffsetOfTheNextDirectoryRecord = offsets[id(following)] if following else 0
        lower = offsets[id(node.children[0])] if node.children else 0
        node.record.OffsetOfReferencedLowerLevelDirectoryEntity = lower
    first = offsets[id(roots[0])] if roots else 0
    last = offsets[id(roots[-1])] if roots else 0
    items = b"".join(
        _ITEM + len(body).to_bytes(4, "little") + body
        for body in (_encode(node.record) for node in flat)
    )
    head = _head(fileset_id, uid, first, last)
    return head + _SEQUENCE_HEADER + len(items).to_bytes(4, "little") + items
