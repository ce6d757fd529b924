"""SEG in and out: labels on the referenced series' grid, checked against highdicom's reader."""

from __future__ import annotations

import shutil
import subprocess

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

import dicomflow as dfl
from dicomflow.derived import segment_table

from .conftest import CORPUS, ORIGIN, STEP


def _labels(shape) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint16)
    lab[1:4, 5:10, 3:8] = 1
    lab[2, 12:15, 10:20] = 2
    lab[5, 0:3, 0:4] = 3
    return lab


def _highdicom_labels(path, vol) -> np.ndarray:
    """highdicom's own pixels of the SEG, one frame per source instance of the volume."""
    seg = hd.seg.segread(path)
    arr = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=vol.sop_instance_uids, combine_segments=True
    )
    return np.asarray(arr)


def test_binary_seg_round_trip_equals_highdicom(ct_series, tmp_path) -> None:
    _, vol = ct_series
    lab = _labels(vol.shape)
    out = dfl.write_seg(lab, vol, tmp_path / "seg.dcm", segments={1: "liver", 2: "lesion"})
    got = dfl.read_seg(out, vol)
    assert got.labels.shape == vol.shape
    np.testing.assert_array_equal(got.labels, lab)
    np.testing.assert_array_equal(got.labels, _highdicom_labels(out, vol))
    np.testing.assert_allclose(got.affine, vol.affine)
    table = got.segments.to_pylist()
    assert [r["SegmentNumber"] for r in table] == [1, 2, 3]
    assert [r["SegmentLabel"] for r in table] == ["liver", "lesion", "Segment 3"]
    assert [r["voxels"] for r in table] == [int((lab == n).sum()) for n in (1, 2, 3)]
    ds = pydicom.dcmread(out)
    assert table[0]["ReferencedSeriesInstanceUID"] == vol.info["SeriesInstanceUID"]
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == vol.info["SeriesInstanceUID"]
    assert table[0]["CategoryCode"] == "SCT:91723000" and table[0]["TypeCode"] == "SCT:85756007"


def test_fractional_seg_is_thresholded(ct_series, tmp_path) -> None:
    _, vol = ct_series
    lab = _labels(vol.shape)
    out = dfl.write_seg(lab, vol, tmp_path / "frac.dcm", fractional=True)
    assert pydicom.dcmread(out).SegmentationType == "FRACTIONAL"
    np.testing.assert_array_equal(dfl.read_seg(out, vol).labels, lab)


def test_labelmap_seg_written_by_highdicom(ct_series, tmp_path) -> None:
    paths, vol = ct_series
    lab = _labels(vol.shape)
    sources = [pydicom.dcmread(p.ref.uri) for p in vol.planes]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n,
            segment_label=f"s{n}",
            segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical"),
            segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            algorithm_type="MANUAL",
        )
        for n in (1, 2, 3)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=lab.astype(np.uint8),
        segmentation_type="LABELMAP",
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=5,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    path = tmp_path / "labelmap.dcm"
    seg.save_as(path)
    got = dfl.read_seg(path, vol)
    np.testing.assert_array_equal(got.labels, lab)
    # highdicom writes a background segment 0 into a LABELMAP SEG; the table keeps it
    table = {r["SegmentNumber"]: r["voxels"] for r in got.segments.to_pylist()}
    assert table == {n: int((lab == n).sum()) for n in (0, 1, 2, 3)}


def test_seg_from_nifti_label_map(ct_series, tmp_path) -> None:
    _, vol = ct_series
    lab = _labels(vol.shape)
    # NIfTI layout written by hand: x = column, y = flipped row, z = slice
    data = np.transpose(lab[:, ::-1, :], (2, 1, 0))
    nib.save(nib.Nifti1Image(data, vol.nifti_affine), tmp_path / "labels.nii.gz")
    out = dfl.write_seg(tmp_path / "labels.nii.gz", vol, tmp_path / "seg.dcm")
    got = dfl.read_seg(out, vol)
    np.testing.assert_array_equal(got.labels, lab)
    got.to_nifti(tmp_path / "back.nii.gz")
    back = nib.load(tmp_path / "back.nii.gz")
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    np.testing.assert_allclose(back.affine, vol.nifti_affine)


def test_nifti_on_another_grid_is_refused(ct_series, tmp_path) -> None:
    _, vol = ct_series
    data = np.zeros(vol.shape[::-1], dtype=np.uint8)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "other.nii.gz")
    with pytest.raises(dfl.DerivedObjectError, match="affine"):
        dfl.write_seg(tmp_path / "other.nii.gz", vol, tmp_path / "seg.dcm")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) missing")
@pytest.mark.parametrize("fractional", [False, True])
def test_written_seg_has_no_dciodvfy_error(ct_series, tmp_path, fractional) -> None:
    _, vol = ct_series
    out = dfl.write_seg(_labels(vol.shape), vol, tmp_path / "seg.dcm", fractional=fractional)
    run = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True)
    errors = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []


@pytest.mark.parametrize(
    "name", ["highdicom_seg_image_ct_binary.dcm", "highdicom_seg_image_ct_true_fractional.dcm"]
)
def test_corpus_segment_table_matches_pydicom(name) -> None:
    ds = pydicom.dcmread(CORPUS / "modality" / "SEG" / name)
    rows = segment_table(ds)
    assert [r["SegmentNumber"] for r in rows] == [int(s.SegmentNumber) for s in ds.SegmentSequence]
    for row, item in zip(rows, ds.SegmentSequence, strict=True):
        assert row["SegmentLabel"] == item.SegmentLabel
        code = item.SegmentedPropertyTypeCodeSequence[0]
        assert row["TypeCode"] == f"{code.CodingSchemeDesignator}:{code.CodeValue}"
        assert row["SegmentAlgorithmType"] == item.SegmentAlgorithmType


def test_not_a_seg_is_refused(ct_series) -> None:
    paths, vol = ct_series
    with pytest.raises(dfl.DerivedObjectError, match="not a SEG"):
        dfl.read_seg(paths[0], vol)


def test_frames_without_source_references_are_placed_by_position(ct_series, tmp_path) -> None:
    _, vol = ct_series
    lab = _labels(vol.shape)
    out = dfl.write_seg(lab, vol, tmp_path / "seg.dcm")
    ds = pydicom.dcmread(out)
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    # a frame with voxels moved 1 mm along the normal (0.4 slice) off the grid: not placed
    i = next(n for n, frame in enumerate(ds.pixel_array) if frame.any())
    item = ds.PerFrameFunctionalGroupsSequence[i]
    pos = [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
    item.PlanePositionSequence[0].ImagePositionPatient = [pos[0], pos[1], pos[2] + 1.0]
    ds.save_as(tmp_path / "positions.dcm")
    got = dfl.read_seg(tmp_path / "positions.dcm", vol)
    k = int(round((pos[2] - ORIGIN[2]) / STEP))  # the slice it was on, by hand geometry
    number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    expected = lab.copy()
    assert (expected[k] == number).any()
    expected[k][expected[k] == number] = 0
    np.testing.assert_array_equal(got.labels, expected)
    assert got.warnings == (f"frame {i + 1} lies on no slice of the referenced series",)


@pytest.mark.parametrize(
    "name",
    [
        "transfer-syntax/explicit-vr-le/liver_nonbyte_aligned.dcm",
        "modality/SEG/liver_1frame.dcm",
        "modality/SEG/highdicom_seg_image_ct_binary_overlap.dcm",
    ],
)
def test_one_bit_frames_equal_pydicom(name) -> None:
    from dicomflow.derived._seg import _frames

    ds = pydicom.dcmread(CORPUS / name)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    got = _frames(ds, n).reshape(n, ds.Rows, ds.Columns)
    np.testing.assert_array_equal(got, np.asarray(ds.pixel_array).reshape(n, ds.Rows, ds.Columns))
