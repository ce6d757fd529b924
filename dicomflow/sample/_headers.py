"""Headers and pixels of the sample archive's instances: every module of a CT or MR image
filled from a series, positions along the stack, and a phantom slice per position."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    MRImageStorage,
)

from ..dicom import file_meta
from ._model import (
    _EXAMS,
    _TISSUES,
    Patient,
    Series,
    Study,
    _ds,
    _seconds,
    _time,
    derive_uid,
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
    ds.file_meta = file_meta(ds.SOPClassUID, None, series.transfer_syntax)
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
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
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
