"""The fast writer gives exactly pydicom's bytes, and hands pydicom what it cannot write."""

from __future__ import annotations

import csv
import io
import warnings

import pydicom
import pytest
from pydicom.dataset import FileDataset

from dicomflow.anonymize import Deidentifier, DeidOptions
from dicomflow.dicom import DeidentifiedDataset, encode_file

from .conftest import SECRET, SHARED

CORPUS = SHARED / "corpus"
RICH = DeidOptions.from_names(
    ["retain-safe-private", "retain-device-identity", "retain-longitudinal-modified-dates",
     "clean-descriptors", "clean-structured-content", "clean-graphics"]
)  # fmt: skip


def _pydicom_bytes(ds: FileDataset) -> bytes:
    buffer = io.BytesIO()
    FileDataset.save_as(ds, buffer, enforce_file_format=True)
    return buffer.getvalue()


def _corpus_paths() -> list[str]:
    manifest = CORPUS / "MANIFEST.csv"
    if not manifest.is_file():
        return []
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["sop_class"] and not r["path"].startswith("br")]
    return [r["path"] for r in rows][::3]  # every third readable file: all folders, ~200 files


def test_same_bytes_as_pydicom_on_the_corpus() -> None:
    paths = _corpus_paths()
    if not paths:
        pytest.skip(f"corpus not found at {CORPUS}")
    same = 0
    for relative in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(CORPUS / relative, force=True)
            for engine in (Deidentifier(SECRET), Deidentifier(SECRET, RICH)):
                try:
                    out, _ = engine.deidentify(ds)
                    expected = _pydicom_bytes(out)
                except Exception:  # noqa: BLE001 - refused, or pydicom itself cannot write it
                    continue
                fast = encode_file(out)
                if fast is not None:
                    assert fast == expected, relative
                    same += 1
    assert same >= 100


def test_same_bytes_as_pydicom_for_every_corpus_file_as_read() -> None:
    """Elements as read (raw values, raw sequences of defined length) are copied as bytes:
    the file must still be the one pydicom writes, for every readable corpus file."""
    manifest = CORPUS / "MANIFEST.csv"
    if not manifest.is_file():
        pytest.skip(f"corpus not found at {CORPUS}")
    with open(manifest, newline="", encoding="utf-8") as f:
        paths = [r["path"] for r in csv.DictReader(f) if r["sop_class"]]
    same = 0
    for relative in paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(CORPUS / relative, force=True)
                expected = _pydicom_bytes(ds)
            except Exception:  # noqa: BLE001 - pydicom itself cannot read or write it
                continue
            fast = encode_file(pydicom.dcmread(CORPUS / relative, force=True))
        if fast is not None:
            assert fast == expected, relative
            same += 1
    assert same >= 400


def test_sample_outputs_and_save_as(sample_archive, tmp_path) -> None:
    engine = Deidentifier(SECRET)
    for path in sample_archive.files[::10]:
        out, _ = engine.deidentify(pydicom.dcmread(path))
        assert isinstance(out, DeidentifiedDataset)
        fast = encode_file(out)
        assert fast is not None and fast == _pydicom_bytes(out)
        out.save_as(tmp_path / "x.dcm", enforce_file_format=True)
        assert (tmp_path / "x.dcm").read_bytes() == fast


def test_what_it_cannot_write_goes_to_pydicom(sample_archive) -> None:
    out, _ = Deidentifier(SECRET).deidentify(pydicom.dcmread(sample_archive.files[0]))
    out.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"  # deflated
    assert encode_file(out) is None
    buffer = io.BytesIO()
    out.save_as(buffer, enforce_file_format=True)  # pydicom's writer
    assert pydicom.dcmread(io.BytesIO(buffer.getvalue())).PatientIdentityRemoved == "YES"


def test_reused_sequences_give_the_same_bytes(sample_archive) -> None:
    """Sequences repeated across a series are cleaned once and reused: same bytes as without."""
    from dicomflow.anonymize import Crosswalk

    engine = Deidentifier(SECRET, RICH)
    for path in sample_archive.files[:40:4]:
        ds = pydicom.dcmread(path)
        first, _ = engine.deidentify(ds)
        again, counts = engine.deidentify(ds)
        uncached, uncached_counts = engine.deidentify(ds, crosswalk=Crosswalk())  # no reuse
        assert encode_file(first) == encode_file(again) == encode_file(uncached)
        assert counts == uncached_counts
    assert engine._sequences  # something was reused
