"""The sample archive's people and acquisitions: patients, studies and series derived from a
seed (names, dates, UIDs, exams), and the identifying values planted in them."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import (
    ExplicitVRLittleEndian,
)

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
