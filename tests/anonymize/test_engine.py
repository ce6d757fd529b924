"""The engine beyond single table rows: privates, charsets, keys, IODs, records, failures."""

from __future__ import annotations

import copy
import datetime as dt
import io
import multiprocessing
import pickle

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dicomflow.anonymize import (
    Crosswalk,
    DeidentificationError,
    Deidentifier,
    DeidOptions,
    load_lookup,
    profile_rows,
    safe_private,
    verify,
)
from dicomflow.errors import ConfigError, DicomflowError

from ._worker import derived, sample
from .conftest import OTHER_SECRET, SECRET

CT = "1.2.840.10008.5.1.4.1.1.2"
PET = "1.2.840.10008.5.1.4.1.1.128"
XA = "1.2.840.10008.5.1.4.1.1.12.1"
MF_SC = "1.2.840.10008.5.1.4.1.1.7.2"  # Multi-frame Grayscale Byte Secondary Capture


def _encode(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


def _roundtrip(ds: Dataset) -> Dataset:
    return pydicom.dcmread(io.BytesIO(_encode(ds)), force=True)


def _listed(keyword_tag: int) -> bool:
    return any(r.kind == "exact" and r.value == keyword_tag for r in profile_rows())


# -- contract ---------------------------------------------------------------------------------


def test_input_is_not_modified() -> None:
    ds = _roundtrip(sample())
    before = _encode(copy.deepcopy(ds))
    Deidentifier(SECRET).deidentify(ds)
    assert _encode(ds) == before


def test_secret_never_shown_or_written() -> None:
    engine = Deidentifier(SECRET, ["retain-uids"])
    assert "secret=<hidden>" in repr(engine) and SECRET.decode() not in repr(engine)
    assert SECRET.decode() not in repr(engine._keys)
    out, _ = engine.deidentify(sample())
    assert SECRET not in _encode(out)
    clone = pickle.loads(pickle.dumps(engine))  # workers get a working copy
    assert clone.deidentify(sample())[0].PatientID == out.PatientID


def test_options_validation() -> None:
    with pytest.raises(ConfigError, match="mutually exclusive"):
        DeidOptions(retain_longitudinal_full_dates=True, retain_longitudinal_modified_dates=True)
    with pytest.raises(ConfigError, match="unknown de-identification option"):
        DeidOptions.from_names(["retain-everything"])
    with pytest.raises(ConfigError):
        DeidOptions(date_shift_days=(10, -10))
    with pytest.raises(ConfigError):
        Deidentifier(b"short")
    assert DeidOptions.from_names(["Retain_UIDs"]).retain_uids


def test_error_tree() -> None:
    assert issubclass(DeidentificationError, DicomflowError)
    assert issubclass(DeidentificationError, ValueError)


# -- private attributes -------------------------------------------------------------------------


def _private_sample() -> Dataset:
    ds = sample()
    # ELSCINT1 (00E1,xx21) DLP is in Table E.3.10-1; reserve block 0x12, not the usual 0x10.
    ds.add(DataElement(0x00E10012, "LO", "ELSCINT1"))
    ds.add(DataElement(0x00E11221, "DS", "123.4"))
    ds.add(DataElement(0x00E11299, "LO", "Doe^Jane private copy"))  # not listed: unsafe
    inner = Dataset()
    inner.PatientName = "Doe^Jane"
    ds.add(DataElement(0x00290010, "LO", "ACME SEQUENCE 1"))
    ds.add(DataElement(0x00291010, "SQ", Sequence([inner])))
    return ds


def test_private_safe_kept_by_creator_and_offset() -> None:
    assert (0x00E1, "ELSCINT1", 0x21) in safe_private()
    ds = _roundtrip(_private_sample())
    out, _ = Deidentifier(SECRET, ["retain-safe-private"]).deidentify(ds)
    assert out[0x00E10012].value == "ELSCINT1"
    assert out[0x00E11221].value == "123.4"
    assert 0x00E11299 not in out
    assert 0x00291010 not in out and 0x00290010 not in out
    assert b"Doe" not in _encode(out)


def test_private_removed_without_option() -> None:
    out, _ = Deidentifier(SECRET).deidentify(_roundtrip(_private_sample()))
    assert not [e for e in out if e.tag.is_private]


def test_same_creator_in_unlisted_group_not_kept() -> None:
    ds = sample()
    ds.add(DataElement(0x00E30010, "LO", "ELSCINT1"))  # right creator, wrong group
    ds.add(DataElement(0x00E31021, "DS", "1.5"))
    out, _ = Deidentifier(SECRET, ["retain-safe-private"]).deidentify(ds)
    assert 0x00E31021 not in out


def test_safe_private_sequence_is_cleaned_inside() -> None:
    assert (0x2001, "Philips Imaging DD 001", 0x5F) in safe_private()  # Stack Sequence
    item = Dataset()
    item.add(DataElement(0x20010010, "LO", "Philips Imaging DD 001"))
    item.add(DataElement(0x2001105F, "SQ", Sequence()))  # nested safe, kept
    item.add(DataElement(0x20011099, "LO", "Doe^Jane"))  # nested unlisted, removed
    item.PatientID = "PID-4711"
    ds = sample()
    ds.add(DataElement(0x20010010, "LO", "Philips Imaging DD 001"))
    ds.add(DataElement(0x2001105F, "SQ", Sequence([item])))
    out, _ = Deidentifier(SECRET, ["retain-safe-private"]).deidentify(_roundtrip(ds))
    kept = out[0x2001105F].value[0]
    assert 0x2001105F in kept and 0x20011099 not in kept
    assert kept.PatientID == out.PatientID  # public attributes inside follow the profile


def test_un_sequence_that_must_be_kept_fails_closed() -> None:
    ds = sample()
    ds.add(DataElement(0x00E10010, "LO", "ELSCINT1"))
    item_bytes = b"\xfe\xff\x00\xe0\x00\x00\x00\x00"
    ds.add(DataElement(0x00E11021, "UN", item_bytes))
    with pytest.raises(DeidentificationError, match="UN"):
        Deidentifier(SECRET, ["retain-safe-private"]).deidentify(ds)
    out, _ = Deidentifier(SECRET).deidentify(ds)  # removed anyway: no need to read it
    assert 0x00E11021 not in out


# -- character sets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "name"),
    [("ISO_IR 100", "Müller^Jürgen"), ("ISO_IR 192", "Ångström^Zoë=山田^太郎")],
)
def test_non_ascii_patient_name_does_not_survive(charset: str, name: str) -> None:
    ds = sample()
    ds.SpecificCharacterSet = charset
    ds.PatientName = name
    ds.ReferringPhysicianName = name
    ds = _roundtrip(ds)
    assert str(ds.PatientName) == name
    out, _ = Deidentifier(SECRET).deidentify(ds)
    data = _encode(out)
    codec = "utf-8" if charset == "ISO_IR 192" else "latin-1"
    for part in name.replace("=", "^").split("^"):
        assert part.encode(codec) not in data
    assert verify(ds, out) == []


# -- keys and determinism -----------------------------------------------------------------------


def test_same_secret_same_values_across_runs_and_processes() -> None:
    here = derived(SECRET)
    assert here == derived(SECRET)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(derived, (SECRET,)) == here
    other = derived(OTHER_SECRET)
    assert all(a != b for a, b in zip(here, other, strict=True))


def test_uid_consistent_everywhere() -> None:
    ds = sample()
    ds.SOPClassUID = XA
    ref = Dataset()
    ref.ReferencedSOPClassUID = CT
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = Sequence([ref])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out, _ = Deidentifier(SECRET).deidentify(ds)
    new = out.SOPInstanceUID
    assert new != ds.SOPInstanceUID
    assert out.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new
    assert out.ReferencedImageSequence[0].ReferencedSOPClassUID == CT  # registered: kept
    assert out.file_meta.MediaStorageSOPInstanceUID == new


def test_date_shift_per_patient_keeps_intervals() -> None:
    engine = Deidentifier(SECRET, DeidOptions(retain_longitudinal_modified_dates=True))
    first, _ = engine.deidentify(sample("PID-1", "20200115"))
    later, _ = engine.deidentify(sample("PID-1", "20200301"))
    other, _ = engine.deidentify(sample("PID-2", "20200115"))

    def day(text: str) -> dt.date:
        return dt.datetime.strptime(text, "%Y%m%d").date()

    assert (day(later.StudyDate) - day(first.StudyDate)).days == 46
    shift = (day(first.StudyDate) - day("20200115")).days
    assert -3650 <= shift <= 0
    assert first.PatientID == later.PatientID != other.PatientID
    assert first.LongitudinalTemporalInformationModified == "MODIFIED"


def test_conflicting_options_take_the_safer_code() -> None:
    # Date of Last Calibration: Retain Device Identity K, Modified Dates C -> C (shifted).
    ds = sample()
    ds.DateOfLastCalibration = "20191201"
    ds.DeviceSerialNumber = "SN-123"
    both = DeidOptions(retain_device_identity=True, retain_longitudinal_modified_dates=True)
    out, _ = Deidentifier(SECRET, both).deidentify(ds)
    assert out.DateOfLastCalibration not in ("", "20191201")
    assert out.DeviceSerialNumber == "SN-123"  # K, no conflict
    alone, _ = Deidentifier(SECRET, ["retain-device-identity"]).deidentify(ds)
    assert alone.DateOfLastCalibration == "20191201"


def test_patient_name_used_when_no_id() -> None:
    engine = Deidentifier(SECRET)
    a, b = sample(), sample()
    del a.PatientID, b.PatientID
    out_a, _ = engine.deidentify(a)
    out_b, _ = engine.deidentify(b)
    assert str(out_a.PatientName) == str(out_b.PatientName) != "Doe^Jane"


def test_lookup_overrides_and_crosswalk_records(tmp_path) -> None:
    table = tmp_path / "subjects.csv"
    table.write_text("PatientID,subject\nPID-4711,SUBJ-001\n", encoding="utf-8")
    lookup = load_lookup(table)
    assert lookup == {"PatientID": {"PID-4711": "SUBJ-001"}}
    crosswalk = Crosswalk()
    out, _ = Deidentifier(SECRET, lookup=lookup).deidentify(sample(), crosswalk=crosswalk)
    assert out.PatientID == "SUBJ-001" and str(out.PatientName) == "SUBJ-001"
    pairs = {(k, o): r for k, o, r in crosswalk}
    assert pairs[("PatientID", "PID-4711")] == "SUBJ-001"
    assert pairs[("UID", sample().StudyInstanceUID)] == out.StudyInstanceUID
    assert "PID" not in repr(crosswalk)
    assert crosswalk.to_arrow().num_rows == len(crosswalk)
    with pytest.raises(ConfigError):
        load_lookup(_write(tmp_path / "bad.csv", "a,b,c\n1,2,3\n"))


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# -- compound codes by IOD --------------------------------------------------------------------


def test_series_date_type1_in_pet_type3_in_ct() -> None:
    # PET Series module: Series Date Type 1; CT Image has it only in General Series (Type 3).
    engine = Deidentifier(SECRET)
    pet, ct = sample(), sample()
    pet.SOPClassUID, ct.SOPClassUID = PET, CT
    pet.SeriesDate = ct.SeriesDate = "20200115"
    out_pet, _ = engine.deidentify(pet)
    out_ct, _ = engine.deidentify(ct)
    assert out_pet.SeriesDate and out_pet.SeriesDate != "20200115"  # D
    assert "SeriesDate" not in out_ct  # X


def test_referenced_image_sequence_kept_with_new_uids_when_type1() -> None:
    # X/Z/U*: Type 1C in X-Ray Image (XA); only Type 3 (General Reference) in CT.
    engine = Deidentifier(SECRET)
    for sop_class, kept in ((XA, True), (CT, False)):
        ds = sample()
        ds.SOPClassUID = sop_class
        ref = Dataset()
        ref.ReferencedSOPClassUID = CT
        ref.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.99"
        ds.ReferencedImageSequence = Sequence([ref])
        out, _ = engine.deidentify(ds)
        assert ("ReferencedImageSequence" in out) is kept
        if kept:
            uid = out.ReferencedImageSequence[0].ReferencedSOPInstanceUID
            assert uid.startswith("2.25.")


def test_module_presence_decides_the_type() -> None:
    # Content Date: General Image 2 (mandatory) vs Multi-frame Functional Groups 1 (optional).
    engine = Deidentifier(SECRET)
    plain = sample()
    plain.SOPClassUID = MF_SC
    plain.ContentDate = "20200115"
    with_groups = copy.deepcopy(plain)
    with_groups.SharedFunctionalGroupsSequence = Sequence([Dataset()])
    assert engine.deidentify(plain)[0]["ContentDate"].is_empty  # Z
    assert engine.deidentify(with_groups)[0].ContentDate not in ("", "20200115")  # D


# -- defaults for attributes the table does not list ----------------------------------------------


def test_unlisted_defaults() -> None:
    ds = sample()
    ds.SOPClassUID = CT
    ds.SecondaryCaptureDeviceManufacturer = "Doe Imaging of Springfield"  # text, Type 3 in CT
    ds.ConvolutionKernel = "STANDARD"  # keep-list
    ds.DataSetType = 0  # retired
    ds.add(DataElement(0x08000001, "UN", b"secret"))  # not in the dictionary
    ds.Rows, ds.Columns, ds.BitsAllocated = 2, 2, 16
    ds.add(DataElement(0x60000010, "US", 2))  # Overlay Rows: removed with its Overlay Data
    ds.add(DataElement(0x60003000, "OW", b"\xff" * 8))
    ds.add(DataElement(0x00041500, "CS", "DIR"))
    assert not _listed(0x00181016) and not _listed(0x00181210)
    out, _ = Deidentifier(SECRET).deidentify(ds)
    assert "SecondaryCaptureDeviceManufacturer" not in out
    assert out.ConvolutionKernel == "STANDARD"
    assert "DataSetType" not in out and 0x08000001 not in out
    assert (out.Rows, out.Columns, out.BitsAllocated) == (2, 2, 16)
    assert 0x60000010 not in out and 0x60003000 not in out and 0x00041500 not in out


def test_clean_graphics_blanks_overlay_keeps_geometry() -> None:
    ds = sample()
    ds.add(DataElement(0x60000010, "US", 2))
    ds.add(DataElement(0x60003000, "OW", b"\xff" * 8))
    out, _ = Deidentifier(SECRET, ["clean-graphics"]).deidentify(ds)
    assert out[0x60000010].value == 2 and out[0x60003000].value == bytes(8)


def test_clean_structured_content_uses_table_e34() -> None:
    def item(code: str, value_type: str, **values: str) -> Dataset:
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = code, "DCM", "x"
        ds = Dataset()
        ds.ValueType = value_type
        ds.ConceptNameCodeSequence = Sequence([concept])
        for key, value in values.items():
            setattr(ds, key, value)
        return ds

    ds = sample()
    ds.ContentSequence = Sequence(
        [
            item("121106", "TEXT", TextValue="Doe^Jane called"),  # Comment: X
            item("113723", "DATETIME", DateTime="20200115101010"),  # Calibration DateTime: D
            item("121012", "UIDREF", UID="1.2.826.0.1.3680043.2.1125.77"),  # Device Observer UID
        ]
    )
    out, _ = Deidentifier(SECRET, ["clean-structured-content"]).deidentify(ds)
    items = out.ContentSequence
    assert len(items) == 1  # the comment (X) and the observer UID (X/D: first letter) went
    assert items[0].DateTime not in ("", "20200115101010")
    kept, _ = Deidentifier(SECRET, ["clean-structured-content", "retain-uids"]).deidentify(ds)
    assert kept.ContentSequence[1].UID == "1.2.826.0.1.3680043.2.1125.77"  # Rtn. UIDs: K


# -- what is recorded ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "flag"),
    [
        ([], "REMOVED"),
        (["retain-longitudinal-full-dates", "retain-uids"], "UNMODIFIED"),
        (["retain-longitudinal-modified-dates", "clean-descriptors"], "MODIFIED"),
    ],
)
def test_method_recorded(names: list[str], flag: str) -> None:
    options = DeidOptions.from_names(names)
    ds = sample()
    ds.DeidentificationMethod = "earlier tool"
    out, _ = Deidentifier(SECRET, options).deidentify(ds)
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == flag
    codes = [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", *(s.code_value for s in options.selected)]
    assert all(i.CodingSchemeDesignator == "DCM" for i in out.DeidentificationMethodCodeSequence)
    methods = list(out.DeidentificationMethod)
    assert methods[0] == "earlier tool" and len(methods) == 3 + len(names)


def test_output_file_meta_and_roundtrip() -> None:
    out, counts = Deidentifier(SECRET).deidentify(_roundtrip(sample()))
    assert out.preamble == b"\0" * 128
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.ImplementationClassUID.startswith("2.25.")
    again = pydicom.dcmread(io.BytesIO(_encode(out)), force=True)
    assert again.PatientID == out.PatientID
    assert counts.total == sum(counts.as_dict().values()) and counts.U >= 2


# -- failing closed -------------------------------------------------------------------------------


def _image(**attrs: object) -> Dataset:
    ds = sample()
    ds.SOPClassUID = CT
    ds.Modality = "CT"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = b"\0\0\0\0"
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"BurnedInAnnotation": "YES"}, "Burned In Annotation"),
        ({"Modality": "US"}, "modality US"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "Secondary Capture"),
    ],
)
def test_burned_in_text_fails_closed(attrs: dict, reason: str) -> None:
    with pytest.raises(DeidentificationError, match=reason):
        Deidentifier(SECRET).deidentify(_image(**attrs))
    # with Clean Pixel Data and no rule: searched by OCR (a blank 2 x 2 image holds no text)
    out, _ = Deidentifier(SECRET, ["clean-pixel-data"]).deidentify(_image(**attrs))
    assert out.PixelData == b"\0\0\0\0"


def test_plain_ct_image_passes() -> None:
    out, _ = Deidentifier(SECRET, ["clean-pixel-data"]).deidentify(_image())
    assert out.PixelData == b"\0\0\0\0"
    assert "113101" not in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]


def test_overlong_kept_value_fails_closed() -> None:
    ds = _roundtrip(_image(PixelPaddingValue=0))
    raw = ds.get_item(0x00280120)
    ds[0x00280120] = raw._replace(length=64, value=b"\0" * 64)
    with pytest.raises(DeidentificationError, match="VM"):
        Deidentifier(SECRET).deidentify(ds)
