"""DICOM media sets: Part 10 files under PS3.10 File IDs, and the DICOMDIR that indexes them.

A File-set (PS3.10 section 8) is a folder whose DICOM files are named only by File ID
components (at most 8 characters from ``A-Z 0-9 _``, at most 8 levels), plus one ``DICOMDIR``
file at the root: a Basic Directory IOD (PS3.3 Annex F) with a PATIENT / STUDY / SERIES record
tree whose leaves (IMAGE, SR DOCUMENT, RT DOSE, ... as PS3.3 F.5 defines them) reference the
files by File ID, with their SOP Class, SOP Instance and Transfer Syntax UIDs.

The :class:`MediaSet` sink writes each instance at a File ID made from hashes of its Patient ID,
Study, Series and SOP Instance UIDs (``PTxxxxxx/STxxxxxx/SExxxxxx/xxxxxxxx``), so every worker
names files the same way without talking to the others; a different instance landing on a name
already used fails (:class:`~dicomflow.writers._files.CollisionError`) and nothing is
overwritten. ``close`` then lists the folder and builds the DICOMDIR from the files it holds,
so files written by earlier runs are included and a rerun gives the same bytes.

Type 1 record keys that an instance does not carry are taken from a related attribute
(e.g. Study Date from Series, Acquisition or Content Date) or, failing that, get a fixed
placeholder (Study Date ``19000101``, Study Time ``000000``, Study ID from a hash of the Study
Instance UID, numbers ``0``, Modality ``OT``, labels ``UNNAMED``), as DCMTK's
``dcmmkdir --invent`` does; the files themselves are not changed.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian

from ..errors import ConfigError, DicomflowError
from ..pipeline.instance import Instance, Output, RunContext
from ._files import (
    _TMP_SUFFIX,
    CollisionError,
    _is_url,
    atomic_write,
    join,
    remove_stale_temporaries,
)
from .part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, encode_part10

__all__ = [
    "DICOMDIR_SOP_CLASS",
    "MediaSet",
    "MediaSetError",
    "build_dicomdir",
    "file_id_for",
    "record_type_for",
    "write_mediaset",
]

#: Media Storage Directory Storage: the SOP Class of a DICOMDIR
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
#: one File ID component (PS3.10 8.2, PS3.11 D.3.2 / E.2.2)
FILE_ID_COMPONENT = re.compile(r"^[A-Z0-9_]{1,8}$")
MAX_FILE_ID_LEVELS = 8
_FILESET_ID = re.compile(r"^[A-Z0-9_ ]{0,16}$")
_BASE36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class MediaSetError(DicomflowError, ValueError):
    """An instance that cannot be put in a media set (no record type, a UID or key missing)."""


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


def file_id_for(ds: Dataset) -> tuple[str, ...]:
    """The File ID of an instance in a media set: components matching ``^[A-Z0-9_]{1,8}$``.

    Folders are ``PT``/``ST``/``SE`` and 6 base-36 characters of a SHA-256 of the Patient ID,
    Study and Series Instance UID (two values sharing a folder is harmless); the file name is
    8 characters of a SHA-256 of the SOP Instance UID (36**8 names per series). Instances
    whose records sit at the root of the directory (Color Palettes) go in ``PALETTE/``.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset(); ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"; ds.PatientID = "P1"
    >>> ds.StudyInstanceUID = "1.2"; ds.SeriesInstanceUID = "1.2.3"; ds.SOPInstanceUID = "1.2.3.4"
    >>> [len(c) for c in file_id_for(ds)]
    [8, 8, 8, 8]
    """
    record_type = record_type_for(ds)
    if record_type in _ROOT_TYPES:
        if not _text(ds, "SOPInstanceUID"):
            raise MediaSetError("an instance in a media set needs SOPInstanceUID")
        return (record_type.replace(" ", "_")[:8], _hash36(_text(ds, "SOPInstanceUID"), 8))
    keys = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    missing = [k for k in keys if not _text(ds, k)]
    if missing:
        raise MediaSetError(f"an instance in a media set needs {', '.join(missing)}")
    return (
        "PT" + _hash36(_patient_key(ds), 6),
        "ST" + _hash36(_text(ds, "StudyInstanceUID"), 6),
        "SE" + _hash36(_text(ds, "SeriesInstanceUID"), 6),
        _hash36(_text(ds, "SOPInstanceUID"), 8),
    )


@dataclass(frozen=True)
class MediaSet:
    """Sink: a PS3.10 File-set under ``root``: Part 10 files at File IDs, and a DICOMDIR.

    Parameters
    ----------
    root
        A local folder or an fsspec URL; created if missing. Files already there (from earlier
        runs, or other writers using conformant File IDs) are kept and indexed too.
    fileset_id
        The File-set ID (0004,1130): up to 16 characters from ``A-Z 0-9 _`` and space.
    storage_options
        Passed to fsspec for URLs.

    Examples
    --------
    >>> sink = MediaSet("share/")  # doctest: +SKIP
    >>> run = dfl.pipeline(dfl.scan("study/")).write(sink).execute()  # doctest: +SKIP
    """

    root: str
    fileset_id: str = "DICOMFLOW"
    storage_options: Mapping[str, Any] = field(default_factory=dict)
    name: str = "mediaset"

    def __post_init__(self) -> None:
        if not _FILESET_ID.match(self.fileset_id):
            raise ConfigError(
                f"File-set ID {self.fileset_id!r}: at most 16 characters from A-Z, 0-9, "
                "'_' and space"
            )

    def config(self) -> dict[str, Any]:
        return {"type": "mediaset", "root": str(self.root), "fileset_id": self.fileset_id}

    @property
    def manifest_folder(self) -> str:
        """Beside the File-set, not in it: a File-set holds only File IDs and the DICOMDIR."""
        return str(self.root).rstrip("/") + ".manifests"

    def open(self, context: RunContext) -> None:
        """Remove temporary files an interrupted earlier run left behind."""
        remove_stale_temporaries(str(self.root), self.storage_options)

    def path_for(self, ds: Dataset) -> str:
        """Where an instance is written: ``root`` joined with its File ID."""
        return join(str(self.root), *file_id_for(ds))

    def write(self, instance: Instance) -> list[Output]:
        """Write one instance at its File ID; fails (nothing written) when the instance could
        not get a complete directory record, so that ``close`` never meets such a file."""
        ds = instance.dataset
        file_id = file_id_for(ds)
        leaf_record(ds, record_type_for(ds), file_id, "")
        data = encode_part10(ds)
        path = join(str(self.root), *file_id)
        atomic_write(path, data, storage_options=self.storage_options)
        return [Output.of_bytes(self.name, path, data)]

    def close(self, context: RunContext, manifest: Any) -> None:
        """Build the DICOMDIR from the files under ``root`` (the manifest is not needed)."""
        build_dicomdir(self.root, fileset_id=self.fileset_id, storage_options=self.storage_options)


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


@dataclass(frozen=True)
class _Entry:
    """A file of the File-set: its File ID, header (no pixel data) and transfer syntax."""

    file_id: tuple[str, ...]
    ds: Dataset
    transfer_syntax: str


def _fs(root: str, storage_options: Mapping[str, Any]) -> tuple[Any, str]:
    import fsspec

    fs, base = fsspec.core.url_to_fs(str(root), **dict(storage_options))
    return fs, base.rstrip("/")


def _file_ids(fs: Any, base: str) -> list[tuple[str, ...]]:
    """File IDs of the files under ``base`` named only by conformant components."""
    if not fs.exists(base):
        return []
    found = []
    for path in fs.find(base, detail=False):
        parts = tuple(path[len(base) :].strip("/").split("/"))
        if parts == ("DICOMDIR",) or len(parts) > MAX_FILE_ID_LEVELS:
            continue
        if all(FILE_ID_COMPONENT.match(p) for p in parts):
            found.append(parts)
    return sorted(found)


def _read_entry(fs: Any, base: str, file_id: tuple[str, ...]) -> _Entry | None:
    path = "/".join([base, *file_id])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fs.open(path, "rb") as f:
                ds = dcmread(f, defer_size=256)  # values are skipped, not read
    except Exception as exc:  # noqa: BLE001 - reported below, the rest is still indexed
        warnings.warn(
            f"{path} is not a DICOM Part 10 file ({exc}); left out of the DICOMDIR", stacklevel=3
        )
        return None
    ts = str(ds.file_meta.get("TransferSyntaxUID", "") or "")
    if str(ds.get("SOPClassUID", "")) == DICOMDIR_SOP_CLASS:
        return None
    return _Entry(file_id, ds, ts)


def _tree(entries: Iterable[_Entry]) -> tuple[list[_Node], list[str]]:
    """The record tree (PATIENT > STUDY > SERIES > leaf, plus root-level records, sorted) and
    the SOP Instance UIDs in it. Only records are kept, not the headers they came from."""
    top = _Node(Dataset())
    seen: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        ds = entry.ds
        uid = _text(ds, "SOPInstanceUID")
        if uid in seen:
            first, second = ("/".join(f) for f in (seen[uid], entry.file_id))
            raise CollisionError(f"SOP Instance {uid} is in the File-set twice: {first}, {second}")
        seen[uid] = entry.file_id
        try:
            record_type = record_type_for(ds)
            leaf = leaf_record(ds, record_type, entry.file_id, entry.transfer_syntax)
        except MediaSetError as exc:
            warnings.warn(
                f"{'/'.join(entry.file_id)}: {exc}; left out of the DICOMDIR", stacklevel=3
            )
            continue
        if record_type in _ROOT_TYPES:
            top.children.append(_Node(leaf))
            continue
        patient = top.child(_patient_key(ds), "PATIENT", ds)
        study = patient.child(_text(ds, "StudyInstanceUID"), "STUDY", ds)
        series = study.child(_text(ds, "SeriesInstanceUID"), "SERIES", ds)
        series.children.append(_Node(leaf))
    top.sort()
    return top.children, sorted(seen)


def _encode(ds: Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = False
    write_dataset(fp, ds)
    return fp.getvalue()


def _head(fileset_id: str, uid: str, first: int, last: int) -> bytes:
    """Preamble, ``DICM``, File Meta Information and the elements before the records."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(DICOMDIR_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = UID(uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
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


def _fileset_uid(fs: Any, base: str, fileset_id: str, uids: list[str]) -> str:
    """The File-set UID: kept from an existing DICOMDIR, else derived from the contents."""
    path = f"{base}/DICOMDIR"
    if fs.exists(path):
        try:
            with fs.open(path, "rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                old = dcmread(f, stop_before_pixels=True, specific_tags=["FileSetID"])
            uid = str(old.file_meta.get("MediaStorageSOPInstanceUID", "") or "")
            if uid:
                return uid
        except Exception:  # noqa: BLE001 - an unreadable DICOMDIR is replaced
            pass
    text = "\n".join([fileset_id, *uids])
    return "2.25." + str(int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big"))


def build_dicomdir(
    root: str,
    *,
    fileset_id: str = "DICOMFLOW",
    storage_options: Mapping[str, Any] | None = None,
) -> Output:
    """Write ``root/DICOMDIR`` indexing every Part 10 file in the File-set under ``root``.

    Files whose path components are all File ID components are read (headers only); a file
    that is not DICOM, or cannot be put in a directory record, is left out with a warning. The
    result depends only on the files, so rebuilding an unchanged File-set gives the same bytes.

    Raises
    ------
    CollisionError
        Two files of the File-set hold the same SOP Instance UID.
    """
    options = dict(storage_options or {})
    fs, base = _fs(root, options)
    entries = (e for e in (_read_entry(fs, base, f) for f in _file_ids(fs, base)) if e)
    roots, uids = _tree(entries)
    data = encode_dicomdir(roots, fileset_id, _fileset_uid(fs, base, fileset_id, uids))
    _replace(str(root), fs, base, data, options)
    return Output.of_bytes("mediaset", join(str(root), "DICOMDIR"), data)


def _replace(root: str, fs: Any, base: str, data: bytes, options: Mapping[str, Any]) -> None:
    """Put ``data`` at ``root/DICOMDIR`` atomically, replacing an earlier DICOMDIR.

    The bytes are first written (and synced) under a temporary name by :func:`atomic_write`,
    then renamed over the old DICOMDIR, so a reader sees the old or the new one, never a part.
    """
    path = f"{base}/DICOMDIR"
    if fs.exists(path) and fs.cat_file(path) == data:
        return
    name = f".DICOMDIR.{hashlib.sha256(data).hexdigest()[:12]}{_TMP_SUFFIX}"
    atomic_write(join(str(root), name), data, storage_options=options)
    if _is_url(str(root)):
        fs.mv(f"{base}/{name}", path)
    else:
        os.replace(os.path.join(base, name), path)


def write_mediaset(
    items: Iterable[Instance | Dataset | str | os.PathLike[str]],
    root: str,
    *,
    fileset_id: str = "DICOMFLOW",
    storage_options: Mapping[str, Any] | None = None,
) -> list[Output]:
    """Write instances (``Instance``, pydicom ``Dataset``, or paths/URLs of Part 10 files) as a
    media set under ``root`` and build its DICOMDIR; returns what was written, DICOMDIR last.

    Examples
    --------
    >>> import glob
    >>> outputs = write_mediaset(sorted(glob.glob("study/*.dcm")), "cd/")  # doctest: +SKIP
    >>> outputs[-1].path  # doctest: +SKIP
    'cd/DICOMDIR'
    """
    from .. import __version__

    options = dict(storage_options or {})
    sink = MediaSet(str(root), fileset_id, options)
    context = RunContext("write_mediaset", "", __version__)
    sink.open(context)
    outputs: list[Output] = []
    for item in items:
        if isinstance(item, Instance):
            instance = item
        elif isinstance(item, Dataset):
            instance = Instance.from_dataset(copy.copy(item))
        else:
            instance = Instance(os.fspath(item), storage_options=options)
        outputs += sink.write(instance)
    outputs.append(build_dicomdir(str(root), fileset_id=fileset_id, storage_options=options))
    return outputs
