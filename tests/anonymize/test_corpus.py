"""Every corpus file pydicom reads is de-identified or refused with a reason, never leaked.

The corpus lives in ``../shared/corpus`` beside the clone (see its README); these tests skip
when that folder is absent. Each file is read with ``dcmread(force=True)``; a file pydicom cannot
read at all is skipped with pydicom's error.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pydicom
import pytest

from dicomflow.anonymize import DeidentificationError, Deidentifier, DeidOptions, verify

from .conftest import SECRET, SHARED

CORPUS = SHARED / "corpus"
NOT_DICOM = (".json", ".nii", ".txt", ".md", ".rst", ".bval", ".bvec", "README", "LICENSE")


def _paths() -> list[str]:
    manifest = CORPUS / "MANIFEST.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as f:
        return [r["path"] for r in csv.DictReader(f) if not r["path"].endswith(NOT_DICOM)]


PATHS = _paths()
BASIC = Deidentifier(SECRET)
RICH = Deidentifier(
    SECRET,
    DeidOptions.from_names(
        [
            "retain-safe-private",
            "retain-device-identity",
            "retain-patient-characteristics",
            "retain-longitudinal-modified-dates",
            "clean-descriptors",
            "clean-structured-content",
            "clean-graphics",
        ]
    ),
)


def _read(path: Path) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, force=True)
        except Exception as exc:  # noqa: BLE001 - pydicom's own verdict
            pytest.skip(f"pydicom cannot read it: {exc}")


@pytest.mark.skipif(not PATHS, reason=f"corpus not found at {CORPUS}")
@pytest.mark.parametrize("relative", PATHS)
def test_corpus_file(relative: str) -> None:
    ds = _read(CORPUS / relative)
    for engine in (BASIC, RICH):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out, counts = engine.deidentify(ds)
            except DeidentificationError as exc:
                assert len(str(exc)) > 20  # a reason, not a bare failure
                continue
            assert out.PatientIdentityRemoved == "YES"
            assert counts.total >= len(ds)  # every top-level attribute got an action
            leaks = [f for f in verify(ds, out) if f.kind == "leak"]
            assert leaks == []


def test_corpus_mostly_deidentified() -> None:
    if not PATHS:
        pytest.skip(f"corpus not found at {CORPUS}")
    ct = sorted((CORPUS / "series" / "dcm_qa_ct_ge").glob("*.dcm"))
    assert ct, "expected the GE CT series in the corpus"
    for path in ct[:5]:
        out, _ = BASIC.deidentify(pydicom.dcmread(path))
        assert out.Modality == "CT" and "PixelData" in out
