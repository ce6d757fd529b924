"""A small, deterministic sample DICOM archive with identifying values planted in it.

:func:`make_sample` writes four patients, six studies and ten series (about 130 files) into a
folder laid out like a scanner export (``PAT001/STU001/SER001/IM00001.dcm``): CT stacks (int16,
Hounsfield rescale), MR stacks (uint16, T1 and T2 style, one oblique), one multi-frame Enhanced CT,
one series in Implicit VR Little Endian, one in RLE Lossless, private blocks (one with a private
sequence of undefined length), three broken files, and identifying values in the places that
de-identification tools are known to miss. The same seed gives byte-identical files on every
machine: every UID, date, name and pixel comes from the seed, never from the clock.

The header and pixel builders (:func:`build_header`, :func:`set_instance`,
:func:`phantom_slice`) are also what ``benchmarks/synth.py`` uses to write archives of any size.

Examples
--------
>>> import tempfile
>>> from dicomflow.sample import make_sample
>>> info = make_sample(tempfile.mkdtemp())
>>> len(info.files), len(info.broken)
(129, 3)
>>> info.planted["PAT002 PatientName"]
'MÜLLER^JÜRGEN'
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    RLELossless,
)

__all__ = [
    "INSTANCE_KEYWORDS",
    "PLANTED_KEYWORDS",
    "PLANTED_PRIVATE",
    "Patient",
    "SampleInfo",
    "Series",
    "Study",
    "build_header",
    "derive_uid",
    "make_patient",
    "make_sample",
    "make_series",
    "make_study",
    "phantom_slice",
    "seeded_rng",
    "set_instance",
    "slice_offset",
    "slice_position",
]

# Identifying values written from the Patient, Study and Series fields of the same name.
_PATIENT_PLANTED = (
    "PatientName PatientID PatientBirthDate PatientAddress PatientTelephoneNumbers "
    "MedicalRecordLocator PatientComments AdditionalPatientHistory"
).split()
_STUDY_PLANTED = (
    "StudyInstanceUID StudyDate StudyTime AccessionNumber StudyID ReferringPhysicianName "
    "RequestedProcedureDescription InstitutionName InstitutionAddress"
).split()
_SERIES_PLANTED = (
    "SeriesInstanceUID PerformingPhysicianName OperatorsName StationName DeviceSerialNumber "
    "ImageComments"
).split()

#: Keywords of the standard attributes that carry planted identifying values (top level, or
#: nested in an item of the sequences named here).
PLANTED_KEYWORDS = (
    *_PATIENT_PLANTED,
    "OtherPatientIDsSequence",
    *_STUDY_PLANTED,
    "RequestAttributesSequence",
    "ReferencedStudySequence",
    *_SERIES_PLANTED,
    "SeriesDate",
    "AcquisitionDateTime",
    "DateOfLastCalibration",
)

#: Private elements that carry planted identifying values: (group, private creator, element
#: offset inside the block, where).
PLANTED_PRIVATE = (
    (0x0011, "DICOMFLOW SAMPLE", 0x10, "top level: a copy of PatientName"),
    (0x0011, "DICOMFLOW SAMPLE", 0x01, "item of the private sequence (0011,xx12): a note"),
)

IMPLEMENTATION_VERSION_NAME = "DICOMFLOW_010"

_EPOCH = dt.date(2024, 3, 15)
_SURNAMES = ("DOE", "MÜLLER", "ŁUKASIEWICZ", "ROE", "GARCÍA", "TANAKA", "OKAFOR", "NOWAK", "SMITH")
_GIVEN = (("JANE", "F"), ("JÜRGEN", "M"), ("ZOFIA", "F"), ("RICHARD", "M"), ("INÉS", "F"))
_STREETS = ("Example Street", "Sample Road", "Placeholder Lane", "Fictional Avenue")
_CITIES = ("Springfield FK1 2AB", "Shelbyville FK9 4ZZ", "Ogdenville FK3 7QX")
_PHYSICIANS = ("WELBY^MARCUS", "QUINN^MICHAELA", "KILDARE^JAMES", "CASEY^BEN", "ROSS^DOUG")
_OPERATORS = ("RIVERS^KIM", "PATEL^ANIL", "LINDQVIST^ERIK", "MBEKI^THANDI")
_INSTITUTIONS = (
    ("EXAMPLE GENERAL HOSPITAL", "1 Example Way, Springfield FK1 1AA, Fakeland"),
    ("SAMPLE VALLEY CLINIC", "99 Valley Road, Shelbyville FK9 9ZZ, Fakeland"),
)
_AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
_SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
# An oblique coronal plane with exact decimal cosines (a 7-24-25 triangle), so that no libm
# trigonometry can make two machines disagree on a digit.
_OBLIQUE = (1.0, 0.0, 0.0, 0.0, 0.28, -0.96)


@dataclass(frozen=True)
class _Exam:
    Modality: str
    StudyDescription: str
    BodyPartExamined: str
    code: tuple[str, str]
    centre: tuple[float, float, float]
    field_of_view: float


@dataclass(frozen=True)
class _Weighting:
    kind: str
    orientation: tuple[float, ...]
    SliceThickness: float
    SpacingBetweenSlices: float
    step: int
    acquisition: dict[str, object]


# fmt: off
_EXAMS = {
    "CT CHEST": _Exam("CT", "CT CHEST W CONTRAST", "CHEST", ("DF-CTCH", "CT chest with contrast"),
                      (0.0, -20.0, -150.0), 350.0),
    "CT ABDOMEN": _Exam("CT", "CT ABDOMEN PELVIS", "ABDOMEN", ("DF-CTAP", "CT abdomen and pelvis"),
                        (0.0, -10.0, -350.0), 380.0),
    "CT HEAD": _Exam("CT", "CT HEAD WO CONTRAST", "HEAD", ("DF-CTHD", "CT head without contrast"),
                     (0.0, 10.0, 60.0), 230.0),
    "MR BRAIN": _Exam("MR", "MR BRAIN", "BRAIN", ("DF-MRBR", "MR brain"), (0.0, 15.0, 50.0), 240.0),
    "MR KNEE": _Exam("MR", "MR KNEE LEFT", "KNEE", ("DF-MRKN", "MR knee"), (80.0, 0.0, -650.0),
                     160.0),
}

_MR_COMMON = dict(
    ScanningSequence="SE", MRAcquisitionType="2D", ImagingFrequency="123.2", ImagedNucleus="1H",
    EchoNumbers="1", MagneticFieldStrength="3", PercentSampling="100", dBdt="0",
    ReceiveCoilName="HeadNeck_20", TransmitCoilName="Body",
)
_WEIGHTINGS = {
    "CT": _Weighting("CT", _AXIAL, 5.0, 5.0, -1, dict(
        ScanOptions="HELICAL MODE", KVP="120", DataCollectionDiameter="500",
        ReconstructionDiameter="350", GantryDetectorTilt="0", TableHeight="160",
        RotationDirection="CW", ExposureTime="500", XRayTubeCurrent="250", Exposure="125",
        FilterType="BODY FILTER", GeneratorPower="30", FocalSpots="0.7", ConvolutionKernel="B30f",
        RevolutionTime=0.5, SingleCollimationWidth=0.6, TotalCollimationWidth=38.4, TableSpeed=46.0,
        TableFeedPerRotation=23.0, SpiralPitchFactor=0.6, CTDIvol=8.2,
    )),
    "T1": _Weighting("T1", _SAGITTAL, 4.0, 4.4, 1, _MR_COMMON | dict(
        SequenceVariant="SK", ScanOptions="FS", SequenceName="*se2d1", RepetitionTime="520",
        EchoTime="12", EchoTrainLength="1", NumberOfAverages="2", NumberOfPhaseEncodingSteps="192",
        PercentPhaseFieldOfView="100", PixelBandwidth="200", AcquisitionMatrix=[0, 256, 192, 0],
        InPlanePhaseEncodingDirection="ROW", FlipAngle="90", SAR="0.8",
    )),
    "T2": _Weighting("T2", _OBLIQUE, 3.0, 3.0, 1, _MR_COMMON | dict(
        SequenceVariant=["SK", "SP"], ScanOptions="PFP", SequenceName="*tse2d1_15",
        RepetitionTime="4000", EchoTime="98", EchoTrainLength="15", NumberOfAverages="1",
        NumberOfPhaseEncodingSteps="240", PercentPhaseFieldOfView="90", PixelBandwidth="220",
        AcquisitionMatrix=[0, 320, 240, 0], InPlanePhaseEncodingDirection="COL", FlipAngle="150",
        SAR="1.9",
    )),
}
# fmt: on

# Tissue values per weighting: background, body, fluid, lesion (CT in HU).
_TISSUES = {"CT": (-1000, 40, -850, 900), "T1": (0, 620, 180, 900), "T2": (0, 420, 1500, 260)}


@dataclass(frozen=True)
class Patient:
    """Who is scanned, with every identifying value written about them.

    ``folder`` is the export folder (``PAT001``); the other fields are named by the DICOM
    keyword they are written to. ``SpecificCharacterSet`` is None for a pure ASCII name.
    """

    folder: str
    PatientName: str
    PatientID: str
    SpecificCharacterSet: str | None
    PatientBirthDate: str
    PatientSex: str
    PatientAddress: str
    PatientTelephoneNumbers: str
    OtherPatientID: str
    MedicalRecordLocator: str
    PatientComments: str
    AdditionalPatientHistory: str
    PatientWeight: str
    PatientSize: str


@dataclass(frozen=True)
class Study:
    """One study (visit) of a patient, with the order and the site it was done at."""

    folder: str
    patient: Patient
    exam: str
    StudyInstanceUID: str
    StudyDate: str
    StudyTime: str
    AccessionNumber: str
    StudyID: str
    ReferringPhysicianName: str
    RequestedProcedureID: str
    ScheduledProcedureStepID: str
    RequestedProcedureDescription: str
    prior_study_uid: str
    InstitutionName: str
    InstitutionAddress: str


@dataclass(frozen=True)
class Series:
    """One series: a stack of ``slices`` parallel images of ``rows`` x ``columns`` pixels."""

    folder: str
    study: Study
    kind: str
    SeriesInstanceUID: str
    SeriesNumber: int
    SeriesDescription: str
    SeriesTime: str
    FrameOfReferenceUID: str
    PerformingPhysicianName: str
    OperatorsName: str
    StationName: str
    DeviceSerialNumber: str
    ImageComments: str
    private_note: str
    rows: int
    columns: int
    slices: int
    transfer_syntax: str
    seed: int
    enhanced: bool = False

    @property
    def weighting(self) -> _Weighting:
        """The acquisition protocol of the series kind (``CT``, ``T1``, ``T2``)."""
        return _WEIGHTINGS[self.kind]

    @property
    def pixel_spacing(self) -> float:
        """Distance between pixel centres in mm, the same along rows and columns."""
        return _EXAMS[self.study.exam].field_of_view / self.columns


@dataclass(frozen=True)
class SampleInfo:
    """What :func:`make_sample` wrote.

    Attributes
    ----------
    root : Path
        The folder the archive was written under.
    files : tuple of Path
        Every valid DICOM file, sorted.
    broken : tuple of Path
        The deliberately broken files (not in ``files``): a truncated file, an empty file and a
        text file, all named like DICOM files.
    planted : dict of str to str
        Every identifying value planted, keyed by ``"<folder> <keyword>"``, where the folder is
        the patient, study or series folder (relative to ``root``) the value belongs to, e.g.
        ``"PAT001 PatientName"`` or ``"PAT001/STU001 AccessionNumber"``.
    planted_in : dict of str to tuple of Path
        For each key of ``planted``, the files that contain the value.
    """

    root: Path
    files: tuple[Path, ...]
    broken: tuple[Path, ...]
    planted: dict[str, str]
    planted_in: dict[str, tuple[Path, ...]]


def _digest(*parts: object) -> int:
    """Return a 128-bit integer that depends only on ``parts``."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")


def derive_uid(*parts: object) -> str:
    """Return a ``2.25.<integer>`` UID derived from ``parts`` (at most 44 characters).

    Examples
    --------
    >>> derive_uid(0, "study", "PAT001/STU001") == derive_uid(0, "study", "PAT001/STU001")
    True
    """
    return f"2.25.{_digest(*parts)}"


IMPLEMENTATION_CLASS_UID = derive_uid("dicomflow", "implementation class")


def seeded_rng(*parts: object) -> np.random.Generator:
    """Return a numpy Generator seeded from ``parts`` alone (any objects, e.g. seed and names).

    Examples
    --------
    >>> int(seeded_rng(0, "x").integers(100)) == int(seeded_rng(0, "x").integers(100))
    True
    """
    return np.random.default_rng(_digest(*parts))


def _ds(value: float) -> str:
    """Format ``value`` as a DS string of at most 16 characters, without trailing zeros."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _date(day: dt.date) -> str:
    return day.strftime("%Y%m%d")


def _seconds(time: str) -> int:
    """Return the seconds since midnight of a ``HHMMSS`` TM value."""
    return int(time[:2]) * 3600 + int(time[2:4]) * 60 + int(time[4:6])


def _time(seconds: int) -> str:
    seconds %= 86400
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}"


def _charset(text: str) -> str | None:
    """Return the Specific Character Set that can encode ``text``, None for ASCII."""
    if text.isascii():
        return None
    try:
        text.encode("latin_1")
    except UnicodeEncodeError:
        return "ISO_IR 192"
    return "ISO_IR 100"


def make_patient(seed: int, index: int) -> Patient:
    """Return the fake patient number ``index`` (0-based) of the archive made with ``seed``.

    Patients 0 to 3 are an ASCII name, a Latin-1 name (ISO_IR 100), a name outside Latin-1
    (ISO_IR 192) and an ASCII name, whatever the seed.
    """
    rng = seeded_rng(seed, "patient", index)
    given, sex = _GIVEN[(index + index // len(_SURNAMES)) % len(_GIVEN)]
    name = f"{_SURNAMES[index % len(_SURNAMES)]}^{given}"
    birth = dt.date(
        int(rng.integers(1940, 2001)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    )
    patient_id = f"DF{seed % 100:02d}{index + 1:06d}"
    phone = f"555-01{int(rng.integers(0, 100)):02d}"
    kin_phone = f"555-01{int(rng.integers(0, 100)):02d}"
    street = f"{int(rng.integers(1, 200))} {_STREETS[int(rng.integers(len(_STREETS)))]}"
    return Patient(
        folder=f"PAT{index + 1:03d}",
        PatientName=name,
        PatientID=patient_id,
        SpecificCharacterSet=_charset(name),
        PatientBirthDate=_date(birth),
        PatientSex=sex,
        PatientAddress=f"{street}, {_CITIES[int(rng.integers(len(_CITIES)))]}",
        PatientTelephoneNumbers=phone,
        OtherPatientID=f"RR-{int(rng.integers(10**7, 10**8))}",
        MedicalRecordLocator=f"MRL/{patient_id}/{int(rng.integers(100, 1000))}",
        PatientComments=f"Prefers morning slots; next of kin on {kin_phone}",
        AdditionalPatientHistory=f"Seen by {given.title()} {name.split('^')[0].title()}'s GP "
        f"on {_date(_EPOCH - dt.timedelta(days=int(rng.integers(10, 60))))}, persistent cough",
        PatientWeight=_ds(float(rng.integers(50, 110))),
        PatientSize=_ds(float(rng.integers(150, 195)) / 100),
    )


def make_study(
    patient: Patient, index: int, *, seed: int, exam: str, prior: Study | None = None
) -> Study:
    """Return study number ``index`` of ``patient``, an ``exam`` such as ``"CT CHEST"``.

    ``prior`` is the earlier study it is compared with (ReferencedStudySequence); without one
    the reference is to a prior study that is not in the archive.
    """
    if exam not in _EXAMS:
        raise ValueError(f"exam must be one of {sorted(_EXAMS)}, not {exam!r}")
    folder = f"{patient.folder}/STU{index + 1:03d}"
    rng = seeded_rng(seed, "study", folder)
    day = _EPOCH + dt.timedelta(days=int(rng.integers(0, 365)))
    institution, address = _INSTITUTIONS[int(rng.integers(len(_INSTITUTIONS)))]
    accession = f"A{int(rng.integers(10**8, 10**9))}"
    return Study(
        folder=folder,
        patient=patient,
        exam=exam,
        StudyInstanceUID=derive_uid(seed, "study", folder),
        StudyDate=_date(day),
        StudyTime=_time(int(rng.integers(7 * 3600, 18 * 3600))),
        AccessionNumber=accession,
        StudyID=f"S{int(rng.integers(10**5, 10**6))}",
        ReferringPhysicianName=_PHYSICIANS[int(rng.integers(len(_PHYSICIANS)))],
        RequestedProcedureID=f"RP{accession[1:7]}",
        ScheduledProcedureStepID=f"SPS{accession[1:7]}",
        RequestedProcedureDescription=f"{_EXAMS[exam].StudyDescription} for {patient.PatientID}",
        prior_study_uid=prior.StudyInstanceUID if prior else derive_uid(seed, "prior", folder),
        InstitutionName=institution,
        InstitutionAddress=address,
    )


def make_series(
    study: Study,
    index: int,
    *,
    seed: int,
    kind: str,
    slices: int,
    matrix: int = 64,
    transfer_syntax: str = ExplicitVRLittleEndian,
    enhanced: bool = False,
) -> Series:
    """Return series number ``index`` of ``study``: ``slices`` images of ``matrix``² pixels.

    ``kind`` is ``"CT"``, ``"T1"`` or ``"T2"``; the transfer syntax is used when writing;
    ``enhanced`` makes the series one multi-frame Enhanced CT object instead of a stack.
    """
    if kind not in _WEIGHTINGS or (kind == "CT") != (_EXAMS[study.exam].Modality == "CT"):
        raise ValueError(f"kind {kind!r} does not fit a {study.exam} study")
    folder = f"{study.folder}/SER{index + 1:03d}"
    rng = seeded_rng(seed, "series", folder)
    operator = _OPERATORS[int(rng.integers(len(_OPERATORS)))]
    station = f"{study.exam[:2]}{int(rng.integers(1, 10))}-{study.InstitutionName.split()[0]}"
    surname = study.patient.PatientName.split("^")[0]
    thickness = _ds(_WEIGHTINGS[kind].SliceThickness)
    return Series(
        folder=folder,
        study=study,
        kind=kind,
        SeriesInstanceUID=derive_uid(seed, "series", folder),
        SeriesNumber=index + 1,
        SeriesDescription=f"{study.exam.split()[1]} {kind} {thickness}mm",
        SeriesTime=_time(_seconds(study.StudyTime) + 120 + index * 300 + int(rng.integers(60))),
        FrameOfReferenceUID=derive_uid(seed, "frame of reference", study.folder),
        PerformingPhysicianName=_PHYSICIANS[int(rng.integers(len(_PHYSICIANS)))],
        OperatorsName=operator,
        StationName=station[:16],
        DeviceSerialNumber=f"SN{int(rng.integers(10**6, 10**7))}",
        ImageComments=f"Repeat acquisition: {surname} moved; tech {operator.split('^')[0]}",
        private_note=f"Scanned for {study.patient.PatientID} at {study.InstitutionName}",
        rows=matrix,
        columns=matrix,
        slices=slices,
        transfer_syntax=transfer_syntax,
        seed=seed,
        enhanced=enhanced,
    )


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, meaning: str, scheme: str = "99DFLOW") -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _add_patient(ds: Dataset, patient: Patient) -> None:
    ds.PatientName = patient.PatientName
    ds.PatientID = patient.PatientID
    ds.IssuerOfPatientID = "EXAMPLE GENERAL HOSPITAL"
    ds.OtherPatientIDsSequence = [
        _item(
            PatientID=patient.OtherPatientID,
            IssuerOfPatientID="REGIONAL REGISTRY (FAKE)",
            TypeOfPatientID="TEXT",
        )
    ]
    ds.PatientBirthDate = patient.PatientBirthDate
    ds.PatientSex = patient.PatientSex
    ds.PatientAddress = patient.PatientAddress
    ds.PatientTelephoneNumbers = patient.PatientTelephoneNumbers
    ds.MedicalRecordLocator = patient.MedicalRecordLocator
    ds.PatientComments = patient.PatientComments
    ds.AdditionalPatientHistory = patient.AdditionalPatientHistory
    ds.PatientWeight = patient.PatientWeight
    ds.PatientSize = patient.PatientSize
    ds.PatientIdentityRemoved = "NO"


def _add_study(ds: Dataset, study: Study) -> None:
    exam = _EXAMS[study.exam]
    years = (int(study.StudyDate) - int(study.patient.PatientBirthDate)) // 10000
    ds.StudyInstanceUID = study.StudyInstanceUID
    ds.StudyDate = study.StudyDate
    ds.StudyTime = study.StudyTime
    ds.AccessionNumber = study.AccessionNumber
    ds.StudyID = study.StudyID
    ds.StudyDescription = exam.StudyDescription
    ds.ReferringPhysicianName = study.ReferringPhysicianName
    ds.PatientAge = f"{years:03d}Y"
    ds.RequestedProcedureDescription = study.RequestedProcedureDescription
    ds.ProcedureCodeSequence = [_code(*exam.code)]
    ds.ReferencedStudySequence = [
        _item(
            ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
            ReferencedSOPInstanceUID=study.prior_study_uid,
        )
    ]
    ds.RequestAttributesSequence = [
        _item(
            RequestedProcedureID=study.RequestedProcedureID,
            ScheduledProcedureStepID=study.ScheduledProcedureStepID,
            ScheduledProcedureStepDescription=exam.StudyDescription,
            ReasonForTheRequestedProcedure="Follow-up",
            ScheduledProtocolCodeSequence=[_code(*exam.code)],
        )
    ]


def _add_series(ds: Dataset, series: Series) -> None:
    study, exam = series.study, _EXAMS[series.study.exam]
    acquired = f"{study.StudyDate}{series.SeriesTime}.000000"
    ds.Modality = exam.Modality
    ds.SeriesInstanceUID = series.SeriesInstanceUID
    ds.SeriesNumber = series.SeriesNumber
    ds.SeriesDate = study.StudyDate
    ds.SeriesTime = series.SeriesTime
    ds.SeriesDescription = series.SeriesDescription
    ds.ProtocolName = f"{exam.StudyDescription} {series.kind}"
    ds.BodyPartExamined = exam.BodyPartExamined
    ds.PatientPosition = "FFS" if exam.BodyPartExamined == "KNEE" else "HFS"
    ds.PerformingPhysicianName = series.PerformingPhysicianName
    ds.OperatorsName = series.OperatorsName
    ds.PerformedProcedureStepID = f"PPS{study.AccessionNumber[1:7]}"
    ds.PerformedProcedureStepStartDate = study.StudyDate
    ds.PerformedProcedureStepStartTime = study.StudyTime
    ds.PerformedProcedureStepDescription = exam.StudyDescription
    ds.PerformedProtocolCodeSequence = [_code(*exam.code)]
    ds.ReferencedPerformedProcedureStepSequence = [
        _item(
            ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.3",
            ReferencedSOPInstanceUID=derive_uid(series.seed, "mpps", series.folder),
        )
    ]
    ds.AnatomicRegionSequence = [
        _item(
            CodeValue=f"DF-{exam.BodyPartExamined[:4]}",
            CodingSchemeDesignator="99DFLOW",
            CodeMeaning=exam.BodyPartExamined.title(),
            AnatomicRegionModifierSequence=[_code("DF-WHOLE", "Entire")],
        )
    ]
    ds.FrameOfReferenceUID = series.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study.StudyDate
    ds.AcquisitionTime = series.SeriesTime
    ds.AcquisitionDateTime = acquired
    ds.ImageComments = series.ImageComments
    ds.ReferencedImageSequence = [
        _item(
            ReferencedSOPClassUID=CTImageStorage if exam.Modality == "CT" else MRImageStorage,
            ReferencedSOPInstanceUID=derive_uid(series.seed, "localizer", series.folder, view),
        )
        for view in ("AP", "LAT")
    ]


def _add_equipment(ds: Dataset, series: Series) -> None:
    modality = _EXAMS[series.study.exam].Modality
    ds.Manufacturer = "ACME Medical (fake)"
    ds.ManufacturerModelName = "Imaginex 64" if modality == "CT" else "Fantasia 3T"
    ds.InstitutionName = series.study.InstitutionName
    ds.InstitutionAddress = series.study.InstitutionAddress
    ds.InstitutionalDepartmentName = "Radiology"
    ds.StationName = series.StationName
    ds.DeviceSerialNumber = series.DeviceSerialNumber
    ds.SoftwareVersions = ["VA10A", "SP2"]
    ds.DateOfLastCalibration = series.study.StudyDate
    ds.TimeOfLastCalibration = "070000"


def _add_image(ds: Dataset, series: Series) -> None:
    weighting, tissues = series.weighting, _TISSUES[series.kind]
    is_ct = series.kind == "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if is_ct else ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.ContentDate = series.study.StudyDate
    ds.ImageOrientationPatient = [_ds(value) for value in weighting.orientation]
    ds.PixelSpacing = [_ds(series.pixel_spacing)] * 2
    ds.SliceThickness = _ds(weighting.SliceThickness)
    ds.SpacingBetweenSlices = _ds(weighting.SpacingBetweenSlices)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = series.rows
    ds.Columns = series.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if is_ct else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if is_ct else 0
    for keyword, value in weighting.acquisition.items():
        setattr(ds, keyword, value)
    if is_ct:
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = ["40", "-600"]
        ds.WindowWidth = ["400", "1500"]
        ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
    else:
        ds.WindowCenter = _ds((tissues[1] + tissues[2]) / 2)
        ds.WindowWidth = _ds(2 * max(tissues))
        ds.WindowCenterWidthExplanation = "DEFAULT"


def _vendor_blob(series: Series, size: int) -> bytes:
    """Return a CSA-like private header of ``size`` bytes: ``key = value`` lines, zero padded."""
    lines = [b"ACME-HDR\x01\x00\x00\x00"]
    for index, (keyword, value) in enumerate(list(series.weighting.acquisition.items()) * 40):
        lines.append(f"sProt.{keyword}[{index}] = {value}\n".encode())
    blob = b"".join(lines)[:size]
    return blob + b"\x00" * (size - len(blob) + len(blob) % 2)


def _add_private(ds: Dataset, series: Series, vendor_blob_size: int) -> None:
    block = ds.private_block(0x0011, "DICOMFLOW SAMPLE", create=True)
    block.add_new(0x10, "LO", series.study.patient.PatientName)
    block.add_new(0x11, "US", series.SeriesNumber * 100 + 7)
    note = Dataset()
    note.private_block(0x0011, "DICOMFLOW SAMPLE", create=True).add_new(
        0x01, "LO", series.private_note
    )
    note.is_undefined_length_sequence_item = True
    block.add_new(0x12, "SQ", Sequence([note]))
    block[0x12].is_undefined_length = True

    acme = ds.private_block(0x0029, "ACME 1.1", create=True)
    acme.add_new(0x10, "OB", _vendor_blob(series, vendor_blob_size))
    acme.add_new(0x11, "LO", "ACME IMAGING SUITE 4.2")
    acme.add_new(0x12, "UL", 20240101)

    oem = ds.private_block(0x0043, "OEMCO IMG 2", create=True)
    oem.add_new(0x01, "SS", 3)
    oem.add_new(0x02, "DS", ["1.25", "0.5", "12"])
    oem.add_new(0x03, "FL", 0.75)
    oem.add_new(0x04, "SH", "RECON-STD")


def _sop_class(series: Series) -> str:
    return CTImageStorage if series.kind == "CT" else MRImageStorage


def build_header(series: Series, *, vendor_blob_size: int = 512) -> Dataset:
    """Return the header shared by every instance of ``series``, with file meta information.

    Call :func:`set_instance` to turn it into instance number ``index`` before writing; add
    Pixel Data from :func:`phantom_slice`. ``vendor_blob_size`` is the size in bytes of the
    vendor's private OB header (``ACME 1.1``, group 0x0029).
    """
    patient = series.study.patient
    ds = Dataset()
    if patient.SpecificCharacterSet:
        ds.SpecificCharacterSet = patient.SpecificCharacterSet
    ds.SOPClassUID = _sop_class(series)
    ds.InstanceCreationDate = series.study.StudyDate
    _add_patient(ds, patient)
    _add_study(ds, series.study)
    _add_series(ds, series)
    _add_equipment(ds, series)
    _add_image(ds, series)
    _add_private(ds, series, vendor_blob_size)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.TransferSyntaxUID = series.transfer_syntax
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds


def slice_offset(series: Series, index: int) -> float:
    """Return the signed distance in mm of slice ``index`` from the stack centre."""
    weighting = series.weighting
    return (index - (series.slices - 1) / 2) * weighting.SpacingBetweenSlices * weighting.step


def slice_position(series: Series, index: int) -> tuple[float, float, float]:
    """Return ImagePositionPatient (the centre of the first pixel) of slice ``index``."""
    orientation = series.weighting.orientation
    row, column = orientation[:3], orientation[3:]
    normal = _normal(orientation)
    centre = _EXAMS[series.study.exam].centre
    half_width = (series.columns - 1) / 2 * series.pixel_spacing
    half_height = (series.rows - 1) / 2 * series.pixel_spacing
    offset = slice_offset(series, index)
    x, y, z = (
        centre[axis] + offset * normal[axis] - half_width * row[axis] - half_height * column[axis]
        for axis in range(3)
    )
    return (x, y, z)


def _normal(orientation: tuple[float, ...]) -> tuple[float, float, float]:
    (rx, ry, rz), (cx, cy, cz) = orientation[:3], orientation[3:]
    return (ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx)


#: The attributes :func:`set_instance` changes from one instance of a series to the next
#: (besides MediaStorageSOPInstanceUID in the file meta information and Pixel Data).
INSTANCE_KEYWORDS = (
    "InstanceCreationTime",
    "SOPInstanceUID",
    "ContentTime",
    "InstanceNumber",
    "ImagePositionPatient",
    "SliceLocation",
)


def set_instance(ds: Dataset, series: Series, index: int) -> None:
    """Set the values of instance ``index`` (0-based) of ``series`` on its header ``ds``.

    Only the attributes of :data:`INSTANCE_KEYWORDS` and MediaStorageSOPInstanceUID change.
    """
    uid = derive_uid(series.seed, "instance", series.folder, index)
    position = slice_position(series, index)
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [_ds(value) for value in position]
    normal = _normal(series.weighting.orientation)
    ds.SliceLocation = _ds(sum(p * n for p, n in zip(position, normal, strict=True)))
    created = _time(_seconds(series.SeriesTime) + 30 + index)
    ds.ContentTime = created
    ds.InstanceCreationTime = created


def phantom_slice(series: Series, offset: float, rng: np.random.Generator) -> np.ndarray:
    """Return the stored pixel values of a phantom slice ``offset`` mm from the stack centre.

    A body ellipse with two low-signal ellipses (lungs or fluid) and a bright sphere centred in
    the stack, plus uniform noise from ``rng``. CT gives int16 (HU + 1024), MR gives uint16
    within 12 bits. Only exactly rounded arithmetic is used, so every machine gets the same
    values.
    """
    background, body, fluid, lesion = _TISSUES[series.kind]
    spacing = series.pixel_spacing
    u = (np.arange(series.columns) - (series.columns - 1) / 2) * spacing
    v = (np.arange(series.rows)[:, None] - (series.rows - 1) / 2) * spacing
    half = series.columns * spacing / 2
    image = np.full((series.rows, series.columns), background, dtype=np.int32)
    image[(u / (0.85 * half)) ** 2 + (v / (0.65 * half)) ** 2 <= 1] = body
    for side in (-1, 1):
        image[((u - side * 0.35 * half) / (0.22 * half)) ** 2 + (v / (0.4 * half)) ** 2 <= 1] = (
            fluid
        )
    radius2 = (0.25 * half) ** 2 - offset**2
    if radius2 > 0:
        image[(u - 0.1 * half) ** 2 + (v + 0.1 * half) ** 2 <= radius2] = lesion
    amplitude = 12 if series.kind == "CT" else 25
    image += rng.integers(-amplitude, amplitude + 1, size=image.shape, dtype=np.int32)
    if series.kind == "CT":
        return (image + 1024).astype(np.int16)
    return np.clip(image, 0, 4095).astype(np.uint16)


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _set_pixels(ds: Dataset, series: Series, pixels: np.ndarray) -> None:
    if series.transfer_syntax == RLELossless:
        ds.compress(RLELossless, pixels, encoding_plugin="pydicom", generate_instance_uid=False)
    else:
        ds.PixelData = pixels.tobytes()


def _stack_instance(series: Series, index: int, header: Dataset) -> bytes:
    rng = seeded_rng(series.seed, "pixels", series.folder, index)
    set_instance(header, series, index)
    _set_pixels(header, series, phantom_slice(series, slice_offset(series, index), rng))
    return _encode(header)


def _enhanced_ct(series: Series) -> bytes:
    """Return the encoded multi-frame Enhanced CT object of ``series`` (one frame per slice)."""
    ds = build_header(series)
    set_instance(ds, series, 0)
    shared = Dataset()
    shared.PixelMeasuresSequence = [
        _item(
            PixelSpacing=ds.PixelSpacing,
            SliceThickness=ds.SliceThickness,
            SpacingBetweenSlices=ds.SpacingBetweenSlices,
        )
    ]
    shared.PlaneOrientationSequence = [_item(ImageOrientationPatient=ds.ImageOrientationPatient)]
    shared.PixelValueTransformationSequence = [
        _item(RescaleIntercept=ds.RescaleIntercept, RescaleSlope=ds.RescaleSlope, RescaleType="HU")
    ]
    shared.FrameVOILUTSequence = [_item(WindowCenter=ds.WindowCenter, WindowWidth=ds.WindowWidth)]
    shared.CTImageFrameTypeSequence = [_item(FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"])]
    moved = (
        "PixelSpacing SliceThickness SpacingBetweenSlices SliceLocation ImageOrientationPatient "
        "ImagePositionPatient RescaleIntercept RescaleSlope RescaleType WindowCenter WindowWidth "
        "WindowCenterWidthExplanation ImageType"
    )
    for keyword in moved.split():
        delattr(ds, keyword)
    dimensions = derive_uid(series.seed, "dimensions", series.folder)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.ContentQualification = "PRODUCT"
    ds.PresentationLUTShape = "IDENTITY"
    ds.NumberOfFrames = series.slices
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.DimensionOrganizationType = "3D"
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dimensions)]
    ds.DimensionIndexSequence = [
        _item(
            DimensionIndexPointer=pointer,
            FunctionalGroupPointer=0x00209111,
            DimensionOrganizationUID=dimensions,
        )
        for pointer in (0x00209056, 0x00209057)
    ]
    frames, per_frame = [], []
    for index in range(series.slices):
        position = slice_position(series, index)
        per_frame.append(
            _item(
                FrameContentSequence=[
                    _item(
                        StackID="1",
                        InStackPositionNumber=index + 1,
                        DimensionIndexValues=[1, index + 1],
                    )
                ],
                PlanePositionSequence=[_item(ImagePositionPatient=[_ds(p) for p in position])],
            )
        )
        rng = seeded_rng(series.seed, "pixels", series.folder, index)
        frames.append(phantom_slice(series, slice_offset(series, index), rng))
    ds.PerFrameFunctionalGroupsSequence = per_frame
    ds.PixelData = np.stack(frames).tobytes()
    return _encode(ds)


def planted_values(series: Series) -> dict[str, str]:
    """Return the identifying values in every file of ``series``, keyed ``"<folder> <what>"``."""
    study, patient = series.study, series.study.patient
    values = {f"{patient.folder} {key}": getattr(patient, key) for key in _PATIENT_PLANTED}
    values[f"{patient.folder} OtherPatientIDsSequence PatientID"] = patient.OtherPatientID
    values |= {f"{study.folder} {key}": getattr(study, key) for key in _STUDY_PLANTED}
    values[f"{study.folder} RequestAttributesSequence RequestedProcedureID"] = (
        study.RequestedProcedureID
    )
    values[f"{study.folder} RequestAttributesSequence ScheduledProcedureStepID"] = (
        study.ScheduledProcedureStepID
    )
    values[f"{study.folder} ReferencedStudySequence ReferencedSOPInstanceUID"] = (
        study.prior_study_uid
    )
    values[f"{series.folder} DateOfLastCalibration (= StudyDate)"] = study.StudyDate
    values[f"{series.folder} SeriesDate"] = study.StudyDate
    values[f"{series.folder} AcquisitionDateTime"] = f"{study.StudyDate}{series.SeriesTime}.000000"
    values |= {f"{series.folder} {key}": getattr(series, key) for key in _SERIES_PLANTED}
    values[f"{series.folder} private (0011,xx10) DICOMFLOW SAMPLE"] = patient.PatientName
    values[f"{series.folder} private sequence (0011,xx12) note"] = series.private_note
    return values


def _sample_series(seed: int) -> list[Series]:
    """Return the ten series of the sample archive, in folder order."""
    pat = [make_patient(seed, index) for index in range(4)]
    chest = make_study(pat[0], 0, seed=seed, exam="CT CHEST")
    brain = make_study(pat[0], 1, seed=seed, exam="MR BRAIN")
    abdomen = make_study(pat[1], 0, seed=seed, exam="CT ABDOMEN")
    knee = make_study(pat[2], 0, seed=seed, exam="MR KNEE")
    head = make_study(pat[3], 0, seed=seed, exam="CT HEAD")
    follow_up = make_study(pat[3], 1, seed=seed, exam="CT HEAD", prior=head)
    return [
        make_series(chest, 0, seed=seed, kind="CT", slices=20, matrix=128),
        make_series(
            chest, 1, seed=seed, kind="CT", slices=12, transfer_syntax=ImplicitVRLittleEndian
        ),
        make_series(brain, 0, seed=seed, kind="T1", slices=16),
        make_series(brain, 1, seed=seed, kind="T2", slices=16),
        make_series(abdomen, 0, seed=seed, kind="CT", slices=20, transfer_syntax=RLELossless),
        make_series(abdomen, 1, seed=seed, kind="CT", slices=8, enhanced=True),
        make_series(knee, 0, seed=seed, kind="T1", slices=12),
        make_series(knee, 1, seed=seed, kind="T2", slices=12),
        make_series(head, 0, seed=seed, kind="CT", slices=10),
        make_series(follow_up, 0, seed=seed, kind="CT", slices=10),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _truncated(series: Series) -> bytes:
    """Return an extra instance of ``series`` cut inside its header, in the private sequence."""
    data = _stack_instance(series, series.slices, build_header(series))
    return data[: data.index(b"\x11\x00\x12\x10") + 16]


def _write_broken(root: Path, series: list[Series]) -> list[Path]:
    truncated, empty, text = series[0], series[7], series[9]
    return [
        _write(
            root / truncated.folder / f"IM{truncated.slices + 1:05d}.dcm", _truncated(truncated)
        ),
        _write(root / empty.folder / f"IM{empty.slices + 1:05d}.dcm", b""),
        _write(
            root / text.folder / f"IM{text.slices + 1:05d}.dcm",
            b"Export log: 10 images sent to PACS, 0 failed.\nThis file is not DICOM.\n",
        ),
    ]


def make_sample(dest: str | Path, *, seed: int = 0) -> SampleInfo:
    """Write the sample archive under ``dest`` and say what was written.

    Parameters
    ----------
    dest : str or Path
        A local folder, created if missing. Files already there with the same names are
        overwritten; others are left alone.
    seed : int, optional
        Everything (UIDs, names, dates, pixels) derives from it: the same seed writes
        byte-identical files on every machine.

    Returns
    -------
    SampleInfo
        The files written, the broken ones, and every identifying value planted.

    Examples
    --------
    >>> import tempfile
    >>> info = make_sample(tempfile.mkdtemp(), seed=1)
    >>> sorted({path.parts[-4] for path in info.files})
    ['PAT001', 'PAT002', 'PAT003', 'PAT004']
    """
    root = Path(dest)
    files: list[Path] = []
    planted: dict[str, str] = {}
    planted_in: dict[str, list[Path]] = {}
    all_series = _sample_series(seed)
    for series in all_series:
        if series.enhanced:
            written = [_write(root / series.folder / "IM00001.dcm", _enhanced_ct(series))]
        else:
            header = build_header(series)
            written = [
                _write(
                    root / series.folder / f"IM{index + 1:05d}.dcm",
                    _stack_instance(series, index, header),
                )
                for index in range(series.slices)
            ]
        files += written
        for key, value in planted_values(series).items():
            planted[key] = value
            planted_in.setdefault(key, []).extend(written)
    broken = _write_broken(root, all_series)
    return SampleInfo(
        root=root,
        files=tuple(sorted(files)),
        broken=tuple(broken),
        planted=planted,
        planted_in={key: tuple(paths) for key, paths in planted_in.items()},
    )


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m dicomflow.sample", description=__doc__.split("\n")[0]
    )
    parser.add_argument("dest", help="folder to write the sample archive into")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    info = make_sample(args.dest, seed=args.seed)
    print(f"{len(info.files)} files and {len(info.broken)} broken files under {info.root}")


if __name__ == "__main__":
    _main()
