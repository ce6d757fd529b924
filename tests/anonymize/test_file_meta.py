"""The de-identifier's Part 10 path: File Meta from the de-identified data set, or from the
File Meta where the data set lacks its SOP UIDs; UIDs that are not UIDs refused, not copied."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest

from dicomflow.anonymize import Deidentify
from dicomflow.dicom import encode_part10
from dicomflow.pipeline import Instance, run_stages

from .conftest import SECRET, SHARED

CORPUS = SHARED / "corpus"
CT = CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm"

pytestmark = pytest.mark.skipif(not CT.is_file(), reason=f"corpus not found at {CORPUS}")


def _read(data) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data) if isinstance(data, bytes) else data, force=True)


def _deidentified(ds, options=()):
    return run_stages([Deidentify(secret=SECRET, options=list(options))], Instance.from_dataset(ds))


def test_uids_only_in_file_meta_give_a_part10_file() -> None:
    """No (0008,0016)/(0008,0018) in the data set: the new File Meta names the SOP Class of the
    old one and the replaced instance UID, and the file is written (an AttributeError before)."""
    ds = _read(CT)
    sop_class, sop_instance = ds.SOPClassUID, ds.SOPInstanceUID
    del ds.SOPClassUID, ds.SOPInstanceUID
    outcome = _deidentified(ds)
    assert outcome.done, outcome.reason
    back = _read(encode_part10(outcome.instance.dataset))
    assert back.file_meta.MediaStorageSOPClassUID == sop_class
    new = back.file_meta.MediaStorageSOPInstanceUID
    assert new != sop_instance and new.startswith("2.25.")


def test_an_invalid_sop_class_uid_fails_the_instance() -> None:
    ds = _read(CT)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2 CT"
    outcome = _deidentified(ds)
    assert outcome.status == "failed" and outcome.exception == "FileMetaError"
    assert "SOP Class UID" in outcome.reason and "not a valid UID" in outcome.reason


def test_an_invalid_instance_uid_is_replaced_or_refused_when_retained() -> None:
    """The Basic Profile replaces it (U) by a valid UID; Retain UIDs keeps it: then refused."""
    ds = _read(CT)
    ds.SOPInstanceUID = "1.2.3.abc"
    outcome = _deidentified(ds)
    assert outcome.done, outcome.reason
    back = _read(encode_part10(outcome.instance.dataset))
    assert back.SOPInstanceUID.startswith("2.25.")
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    refused = _deidentified(ds, ["retain-uids"])
    assert refused.status == "failed" and refused.exception == "FileMetaError"
    assert "'1.2.3.abc' is not a valid UID" in refused.reason


def test_a_data_set_without_file_meta_is_written_in_its_encoding() -> None:
    """CR-MONO1-10-chest: no preamble, no File Meta, implicit VR little endian."""
    outcome = run_stages(
        [Deidentify(secret=SECRET)], Instance(str(CORPUS / "broken/CR-MONO1-10-chest"))
    )
    assert outcome.done, outcome.reason
    back = _read(encode_part10(outcome.instance.dataset))
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPClassUID == back.SOPClassUID
