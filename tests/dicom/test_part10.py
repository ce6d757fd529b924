"""File Meta Information as PS3.10 7.1 asks: the SOP UIDs found where the object has them, and
every UID checked (PS3.5 9.1) before it goes into a File Meta group, on real corpus files."""

from __future__ import annotations

import copy
import io
import os
import warnings
from pathlib import Path

import pydicom
import pytest

import dicomflow as dfl
from dicomflow.dicom import checked_uid, encode_part10, file_meta, file_meta_bytes, sop_uids

SHARED = Path(os.environ.get("DICOMFLOW_SHARED", Path(__file__).resolve().parents[3] / "shared"))
CORPUS = SHARED / "corpus"
CT = CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm"

pytestmark = pytest.mark.skipif(not CT.is_file(), reason=f"corpus not found at {CORPUS}")

#: values that are not UIDs, as they turn up in data sets: each must be refused
NOT_UIDS = {
    "letters": "1.2.840.113619.abc",
    "space inside": "1.2.840 113619.2",
    "65 characters": "1.2." + "1" * 61,
    "garbage after the padding": "1.2.840.113619.2\0junk",
    "empty component": "1.2..3",
    "trailing dot": "1.2.3.",
}


def _read(path: Path) -> pydicom.FileDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, force=True)


def test_uids_only_in_file_meta_are_used() -> None:
    """A data set without (0008,0016)/(0008,0018): File Meta's Media Storage UIDs stand in."""
    ds = _read(CT)
    sop_class, sop_instance = ds.SOPClassUID, ds.SOPInstanceUID
    del ds.SOPClassUID, ds.SOPInstanceUID
    assert sop_uids(ds) == (sop_class, sop_instance)
    back = pydicom.dcmread(io.BytesIO(encode_part10(ds)))
    assert back.file_meta.MediaStorageSOPClassUID == sop_class
    assert back.file_meta.MediaStorageSOPInstanceUID == sop_instance
    assert "SOPInstanceUID" not in back  # the data set is written as it is


def test_an_empty_data_set_uid_falls_back_to_file_meta() -> None:
    ds = _read(CT)
    sop_instance = ds.SOPInstanceUID
    ds.SOPInstanceUID = ""
    back = pydicom.dcmread(io.BytesIO(encode_part10(ds)))
    assert back.file_meta.MediaStorageSOPInstanceUID == sop_instance


def test_no_uid_anywhere_is_a_file_meta_error() -> None:
    """The corpus file with an empty SOP Instance UID and none in its File Meta: no Part 10
    file can carry it (PS3.10 7.1: (0002,0003) is Type 1)."""
    ds = _read(CORPUS / "transfer-syntax/jpeg-lossless-sv1/JPEGLosslessP14SV1_1s_1f_u_16_16.dcm")
    old_meta = ds.file_meta
    with pytest.raises(dfl.FileMetaError, match="no SOP Instance UID"):
        encode_part10(ds)
    assert ds.file_meta is old_meta


@pytest.mark.parametrize("value", NOT_UIDS.values(), ids=NOT_UIDS.keys())
def test_invalid_uids_are_refused_not_copied(value: str) -> None:
    ds = _read(CT)
    ds.SOPInstanceUID = value
    old_meta = copy.deepcopy(ds.file_meta)
    with pytest.raises(dfl.FileMetaError, match="SOP Instance UID .* is not a valid UID"):
        encode_part10(ds)
    assert ds.file_meta == old_meta
    with pytest.raises(dfl.FileMetaError):
        file_meta(ds.SOPClassUID, value, "1.2.840.10008.1.2.1")
    with pytest.raises(dfl.FileMetaError):
        file_meta(value, None, "1.2.840.10008.1.2.1")


def test_a_legacy_leading_zero_is_kept_as_it_came() -> None:
    """PS3.5 forbids it, but archives hold such UIDs: the output keeps its input's UID."""
    ds = _read(CT)
    ds.SOPInstanceUID = "1.2.840.0113619.2"
    back = pydicom.dcmread(io.BytesIO(encode_part10(ds)))
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID == "1.2.840.0113619.2"


def test_an_invalid_data_set_uid_is_not_replaced_by_the_file_meta_one() -> None:
    ds = _read(CT)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2x"
    assert ds.file_meta.MediaStorageSOPClassUID  # a valid one is there, and is not used
    with pytest.raises(dfl.FileMetaError, match="SOP Class UID"):
        encode_part10(ds)


@pytest.mark.parametrize("padding", ["\0", " "])
def test_padding_is_not_part_of_the_uid(padding: str) -> None:
    ds = _read(CT)
    uid = str(ds.SOPInstanceUID)
    assert checked_uid(uid + padding, "SOP Instance UID") == uid
    meta = file_meta(ds.SOPClassUID, uid + padding, "1.2.840.10008.1.2" + padding)
    assert meta.MediaStorageSOPInstanceUID == uid and meta.TransferSyntaxUID == "1.2.840.10008.1.2"


def test_a_value_pydicom_did_not_strip_is_checked_as_it_is() -> None:
    with pytest.raises(dfl.FileMetaError, match="not a valid UID"):
        checked_uid(" 1.2.3", "SOP Instance UID")
    with pytest.raises(dfl.FileMetaError, match="it is empty"):
        checked_uid("\0", "SOP Instance UID")


def test_received_instances_keep_the_uids_the_peer_sent() -> None:
    """file_meta_bytes is for landing instances as received: it writes what it is given."""
    data = file_meta_bytes("1.2.840.10008.5.1.4.1.1.7", "../escape", "1.2.840.10008.1.2")
    assert b"../escape" in data


def test_the_longest_uid_and_a_zero_component_are_valid() -> None:
    longest = "1.2." + "1" * 60
    assert len(longest) == 64 and checked_uid(longest, "UID") == longest
    assert checked_uid("1.2.0.3", "UID") == "1.2.0.3"
