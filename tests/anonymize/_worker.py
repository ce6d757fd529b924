"""Run in a freshly spawned process by the determinism test (a different hash seed)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from dicomflow.anonymize import Deidentifier, DeidOptions


def sample(patient_id: str = "PID-4711", study_date: str = "20200115") -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.PatientID = patient_id
    ds.StudyDate = study_date
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.2.1125.1"
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.2.1125.2"
    return ds


def derived(secret: bytes) -> tuple[str, str, str, str]:
    """UIDs, pseudonym and shifted date of `sample` de-identified with ``secret``."""
    engine = Deidentifier(secret, DeidOptions(retain_longitudinal_modified_dates=True))
    out, _ = engine.deidentify(sample())
    return (
        str(out.StudyInstanceUID),
        str(out.SOPInstanceUID),
        str(out.PatientID),
        str(out.StudyDate),
    )
