"""The sample archive (dicomflow.sample) and the benchmark generator (benchmarks/synth.py)."""

from __future__ import annotations

import importlib.util
import io
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pydicom
import pytest
from pydicom.charset import python_encoding
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from dicomflow.sample import (
    PLANTED_KEYWORDS,
    SampleInfo,
    build_header,
    make_patient,
    make_sample,
    make_series,
    make_study,
    set_instance,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleInfo:
    return make_sample(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def headers(sample: SampleInfo) -> dict[Path, Dataset]:
    return {path: pydicom.dcmread(path) for path in sample.files}


@pytest.fixture(scope="module")
def synth() -> Iterator[ModuleType]:
    """benchmarks/synth.py, imported by path (benchmarks/ is not a package)."""
    name = "dicomflow_benchmarks_synth"
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "synth.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _by_series(headers: dict[Path, Dataset]) -> dict[str, list[Dataset]]:
    series = defaultdict(list)
    for ds in headers.values():
        series[ds.SeriesInstanceUID].append(ds)
    return {uid: sorted(stack, key=lambda ds: ds.InstanceNumber) for uid, stack in series.items()}


def _normal(ds: Dataset) -> np.ndarray:
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    return np.cross(orientation[:3], orientation[3:])


def test_same_seed_gives_the_same_bytes(sample: SampleInfo, tmp_path: Path) -> None:
    again = make_sample(tmp_path / "again")
    first, second = _tree(sample.root), _tree(again.root)
    assert len(first) == len(sample.files) + len(sample.broken)
    assert first == second
    assert [p.relative_to(again.root) for p in again.files] == [
        p.relative_to(sample.root) for p in sample.files
    ]


def test_another_seed_gives_other_identities(sample: SampleInfo, tmp_path: Path) -> None:
    other = make_sample(tmp_path / "other", seed=7)
    for key in ("PAT001/STU001 StudyInstanceUID", "PAT001 PatientID", "PAT001/STU001 StudyDate"):
        assert other.planted[key] != sample.planted[key]


def test_layout_and_counts(sample: SampleInfo, headers: dict[Path, Dataset]) -> None:
    assert 100 <= len(sample.files) <= 150
    for path in (*sample.files, *sample.broken):
        parts = path.relative_to(sample.root).parts
        assert re.fullmatch(r"PAT\d{3}/STU\d{3}/SER\d{3}/IM\d{5}\.dcm", "/".join(parts))
    assert len({ds.PatientID for ds in headers.values()}) == 4
    assert len({ds.StudyInstanceUID for ds in headers.values()}) == 6
    assert len({ds.SeriesInstanceUID for ds in headers.values()}) == 10
    assert len({ds.SOPInstanceUID for ds in headers.values()}) == len(sample.files)
    by_folder = defaultdict(set)
    for path, ds in headers.items():
        by_folder[path.parent].add(ds.SeriesInstanceUID)
        by_folder[path.parent.parent.parent].add(ds.PatientID)
    assert all(len(values) == 1 for values in by_folder.values())
    for ds in headers.values():
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        for uid in (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID):
            assert len(uid) <= 64 and uid.is_valid


def test_transfer_syntaxes_and_pixels(headers: dict[Path, Dataset]) -> None:
    syntaxes = defaultdict(set)
    for ds in headers.values():
        syntaxes[ds.file_meta.TransferSyntaxUID].add(ds.SeriesInstanceUID)
    assert set(syntaxes) == {ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless}
    assert len(syntaxes[ImplicitVRLittleEndian]) == len(syntaxes[RLELossless]) == 1
    for ds in headers.values():
        pixels = ds.pixel_array
        frames = int(ds.get("NumberOfFrames", 1))
        assert pixels.shape == ((frames,) if frames > 1 else ()) + (ds.Rows, ds.Columns)
        assert pixels.dtype == (np.int16 if ds.Modality == "CT" else np.uint16)
        assert pixels.std() > 10  # a phantom with noise, not a constant


def test_ct_is_in_hounsfield_units(headers: dict[Path, Dataset]) -> None:
    single_frame_ct = [ds for ds in headers.values() if ds.SOPClassUID.name == "CT Image Storage"]
    assert len(single_frame_ct) > 50
    for ds in single_frame_ct:
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        assert abs(hu[0, 0] + 1000) < 20  # air in the corner
        assert abs(hu[3 * ds.Rows // 4, ds.Columns // 2] - 40) < 20  # soft tissue
        assert abs(hu[ds.Rows // 2, ds.Columns * 13 // 40] + 850) < 20  # a lung
    assert any(ds.pixel_array.max() - 1024 > 800 for ds in single_frame_ct)  # the sphere


def test_stacks_step_along_the_normal(headers: dict[Path, Dataset]) -> None:
    stacks = [stack for stack in _by_series(headers).values() if len(stack) > 1]
    assert len(stacks) == 9
    oblique = 0
    for stack in stacks:
        normal = _normal(stack[0])
        oblique += not np.isclose(np.abs(normal).max(), 1)
        spacing = float(stack[0].SpacingBetweenSlices)
        positions = np.array([ds.ImagePositionPatient for ds in stack], dtype=float)
        steps = np.diff(positions, axis=0)
        along = steps @ normal
        assert np.allclose(np.abs(along), spacing, atol=1e-3)
        assert len(set(np.sign(along))) == 1
        assert np.allclose(steps - along[:, None] * normal, 0, atol=1e-3)
        locations = [float(ds.SliceLocation) for ds in stack]
        assert np.allclose(locations, positions @ normal, atol=1e-3)
        assert [ds.InstanceNumber for ds in stack] == list(range(1, len(stack) + 1))
        assert len({ds.FrameOfReferenceUID for ds in stack}) == 1
        assert float(stack[0].SliceThickness) <= spacing
    assert oblique == 2


def test_enhanced_ct_frames_step_along_the_normal(headers: dict[Path, Dataset]) -> None:
    (ds,) = [ds for ds in headers.values() if ds.SOPClassUID.name == "Enhanced CT Image Storage"]
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    assert shared.PixelValueTransformationSequence[0].RescaleType == "HU"
    frames = ds.PerFrameFunctionalGroupsSequence
    assert len(frames) == ds.NumberOfFrames > 1
    positions = np.array(
        [item.PlanePositionSequence[0].ImagePositionPatient for item in frames], dtype=float
    )
    along = np.diff(positions, axis=0) @ np.cross(orientation[:3], orientation[3:])
    assert np.allclose(np.abs(along), float(measures.SpacingBetweenSlices))


def test_broken_files_fail(sample: SampleInfo) -> None:
    assert len(sample.broken) == 3
    assert not set(sample.broken) & set(sample.files)
    assert sum(path.stat().st_size == 0 for path in sample.broken) == 1
    for path in sample.broken:
        assert path.suffix == ".dcm" and (path.parent / "IM00001.dcm").is_file()
        with pytest.raises((pydicom.errors.InvalidDicomError, OSError, ValueError)):
            pydicom.dcmread(path)
    truncated = [p for p in sample.broken if p.read_bytes()[128:132] == b"DICM"]
    assert len(truncated) == 1 and truncated[0].stat().st_size < 4096


def test_planted_values_occur_in_their_files(
    sample: SampleInfo, headers: dict[Path, Dataset]
) -> None:
    assert set(sample.planted) == set(sample.planted_in)
    assert len(sample.planted) > 150
    for key, value in sample.planted.items():
        assert value and sample.planted_in[key], key
        for path in sample.planted_in[key]:
            charset = headers[path].get("SpecificCharacterSet", "ISO_IR 6")
            encoded = value.encode(python_encoding[charset])
            assert encoded in path.read_bytes(), (key, path)
    for patient in ("PAT001", "PAT002", "PAT003", "PAT004"):
        every_file = {p for p in sample.files if p.relative_to(sample.root).parts[0] == patient}
        assert set(sample.planted_in[f"{patient} PatientName"]) == every_file


def test_planted_values_sit_in_the_usual_places(
    sample: SampleInfo, headers: dict[Path, Dataset]
) -> None:
    path = sample.root / "PAT002/STU001/SER001/IM00001.dcm"
    ds, planted = headers[path], sample.planted
    for keyword in PLANTED_KEYWORDS:
        assert keyword in ds, keyword
    assert ds.PatientName == planted["PAT002 PatientName"] == "MÜLLER^JÜRGEN"
    assert (
        ds.OtherPatientIDsSequence[0].PatientID
        == planted["PAT002 OtherPatientIDsSequence PatientID"]
    )
    request = ds.RequestAttributesSequence[0]
    assert request.ScheduledProcedureStepID.startswith("SPS")
    assert (
        request.RequestedProcedureID
        == planted["PAT002/STU001 RequestAttributesSequence RequestedProcedureID"]
    )
    assert ds.DateOfLastCalibration == ds.StudyDate == planted["PAT002/STU001 StudyDate"]
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID.is_valid
    block = ds.private_block(0x0011, "DICOMFLOW SAMPLE")
    assert block[0x10].value == ds.PatientName
    assert isinstance(block[0x11].value, int)
    private_sequence = block[0x12]
    assert private_sequence.VR == "SQ" and private_sequence.is_undefined_length
    note = private_sequence.value[0].private_block(0x0011, "DICOMFLOW SAMPLE")[0x01].value
    assert note == planted["PAT002/STU001/SER001 private sequence (0011,xx12) note"]
    assert ds.private_block(0x0029, "ACME 1.1")[0x10].VR == "OB"


def test_names_outside_ascii_use_their_character_set(headers: dict[Path, Dataset]) -> None:
    charsets = {str(ds.PatientName): ds.get("SpecificCharacterSet") for ds in headers.values()}
    assert charsets == {
        "DOE^JANE": None,
        "MÜLLER^JÜRGEN": "ISO_IR 100",
        "ŁUKASIEWICZ^ZOFIA": "ISO_IR 192",
        "ROE^RICHARD": None,
    }


def test_synth_small_archive(synth: ModuleType, tmp_path: Path) -> None:
    paths = synth.generate(tmp_path / "a", 20, pixels="small")
    again = synth.generate(tmp_path / "b", 20, pixels="small")
    assert len(paths) == len(set(paths)) == 20
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert [Path(p).relative_to(tmp_path / "a") for p in paths] == [
        Path(p).relative_to(tmp_path / "b") for p in again
    ]
    for path in paths:
        ds = pydicom.dcmread(path)
        assert len(list(ds.iterall())) >= 120
        assert ds.pixel_array.shape == (64, 64)
        assert all(keyword in ds for keyword in synth.PLANTED_KEYWORDS)
        assert sum(1 for elem in ds if elem.tag.is_private_creator) >= 2


def test_synth_without_pixels(synth: ModuleType, tmp_path: Path) -> None:
    (path,) = synth.generate(tmp_path, 1, seed=3, pixels="none")
    ds = pydicom.dcmread(path)
    assert "PixelData" not in ds and ds.Rows == 512
    header_size = Path(path).stat().st_size
    assert 8_000 <= header_size <= 12_000


def test_synth_plan_groups_series(synth: ModuleType) -> None:
    series = synth.plan(5000, seed=1)
    sizes = [s.slices for s in series]
    assert sum(sizes) == 5000
    assert all(50 <= size <= 300 for size in sizes[:-1]) and 1 <= sizes[-1] <= 300
    ct = sum(s.slices for s in series if s.kind == "CT") / 5000
    assert 0.55 <= ct <= 0.8
    assert len({s.study.patient.PatientID for s in series}) > 3
    assert len({s.SeriesInstanceUID for s in series}) == len(series)


@pytest.mark.parametrize("patient_index", [0, 1, 2])  # ASCII, ISO_IR 100, ISO_IR 192
def test_synth_fast_encoding_is_what_pydicom_writes(synth: ModuleType, patient_index: int) -> None:
    study = make_study(make_patient(5, patient_index), 0, seed=5, exam="MR BRAIN")
    series = make_series(study, 0, seed=5, kind="T2", slices=3, matrix=16)
    header = build_header(series, vendor_blob_size=5000)
    split = synth.split_header(header)
    for index in range(series.slices):
        set_instance(header, series, index)
        if index:
            header.add_new("PixelData", "OW", bytes([index]) * (2 * 16 * 16))
        expected = io.BytesIO()
        pydicom.dcmwrite(expected, header, enforce_file_format=True)
        assert synth.encode_instance(header, split) == expected.getvalue()
