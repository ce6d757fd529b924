"""RTSTRUCT to masks on the series' grid: expected voxels worked out by hand from the geometry."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

import dicomflow as dfl
from dicomflow.derived import fill_polygon

from .conftest import CORPUS, ORIGIN, SPACING, STEP


def _xyz(col: float, row: float, k: int) -> list[float]:
    """Patient position of (column, row, slice) on the synthetic grid (axial, LPS)."""
    return [ORIGIN[0] + col * SPACING[1], ORIGIN[1] + row * SPACING[0], ORIGIN[2] + k * STEP]


def _square(c0, c1, r0, r1, k) -> list[float]:
    pts = [_xyz(c0, r0, k), _xyz(c1, r0, k), _xyz(c1, r1, k), _xyz(c0, r1, k)]
    return [v for p in pts for v in p]


def _contour(kind: str, data: list[float]) -> Dataset:
    c = Dataset()
    c.ContourGeometricType = kind
    c.NumberOfContourPoints = len(data) // 3
    c.ContourData = data
    return c


def _rtstruct(path, vol, other_for: str, other_series: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = RTStructureSetStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.StudyInstanceUID, ds.SeriesInstanceUID = (
        "RTSTRUCT",
        generate_uid(),
        generate_uid(),
    )
    ds.StructureSetLabel = "test"
    frames = []
    for for_uid, series in (
        (vol.info["FrameOfReferenceUID"], vol.info["SeriesInstanceUID"]),
        (other_for, other_series),
    ):
        f, st, se = Dataset(), Dataset(), Dataset()
        f.FrameOfReferenceUID = for_uid
        se.SeriesInstanceUID = series
        st.RTReferencedSeriesSequence = Sequence([se])
        f.RTReferencedStudySequence = Sequence([st])
        frames.append(f)
    ds.ReferencedFrameOfReferenceSequence = Sequence(frames)
    rois = [
        (1, "body", vol.info["FrameOfReferenceUID"], "ORGAN"),
        (2, "marker", vol.info["FrameOfReferenceUID"], "MARKER"),
        (3, "line", vol.info["FrameOfReferenceUID"], "CONTROL"),
        (4, "elsewhere", other_for, "ORGAN"),
    ]
    ds.StructureSetROISequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    for number, name, for_uid, kind in rois:
        r = Dataset()
        r.ROINumber, r.ROIName, r.ReferencedFrameOfReferenceUID = number, name, for_uid
        r.ROIGenerationAlgorithm = "MANUAL"
        ds.StructureSetROISequence.append(r)
        o = Dataset()
        o.ObservationNumber, o.ReferencedROINumber, o.RTROIInterpretedType = number, number, kind
        ds.RTROIObservationsSequence.append(o)
    contours = {
        1: [
            _contour("CLOSED_PLANAR", _square(2.5, 10.5, 3.5, 12.5, 2)),
            _contour("CLOSED_PLANAR", _square(5.5, 7.5, 6.5, 9.5, 2)),  # a hole
            _contour("CLOSED_PLANAR", _square(2.5, 10.5, 3.5, 12.5, 3)),
        ],
        2: [_contour("POINT", _xyz(4, 4, 1))],
        3: [_contour("OPEN_PLANAR", _xyz(1, 1, 1) + _xyz(8, 1, 1) + _xyz(8, 9, 1))],
        4: [_contour("CLOSED_PLANAR", _square(0, 5, 0, 5, 0))],
    }
    ds.ROIContourSequence = Sequence()
    for number, items in contours.items():
        rc = Dataset()
        rc.ReferencedROINumber = number
        rc.ContourSequence = Sequence(items)
        ds.ROIContourSequence.append(rc)
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def rtstruct(ct_series, tmp_path):
    _, vol = ct_series
    path = tmp_path / "rtss.dcm"
    _rtstruct(path, vol, generate_uid(), generate_uid())
    return path, vol


def test_closed_contours_with_a_hole(rtstruct) -> None:
    path, vol = rtstruct
    got = dfl.read_rtstruct(path, vol)
    expected = np.zeros(vol.shape, dtype=bool)
    # voxel centres inside columns 2.5..10.5 and rows 3.5..12.5: columns 3-10, rows 4-12
    expected[2, 4:13, 3:11] = True
    expected[2, 7:10, 6:8] = False  # columns 6-7, rows 7-9 lie inside the inner contour
    expected[3, 4:13, 3:11] = True
    np.testing.assert_array_equal(got.masks[1], expected)
    np.testing.assert_array_equal(got.labels == 1, expected)
    assert got.warnings == ()


def test_point_open_and_other_series_rois_are_reported_not_filled(rtstruct) -> None:
    path, vol = rtstruct
    got = dfl.read_rtstruct(path, vol)
    rows = {r["ROINumber"]: r for r in got.segments.to_pylist()}
    assert set(got.masks) == {1}
    assert rows[1]["rasterised"] and rows[1]["voxels"] == 2 * 72 - 6
    assert rows[1]["ReferencedSeriesInstanceUID"] == vol.info["SeriesInstanceUID"]
    assert not rows[2]["rasterised"] and "POINT" in rows[2]["reason"]
    assert not rows[3]["rasterised"] and "OPEN_PLANAR" in rows[3]["reason"]
    assert not rows[4]["rasterised"] and "frame of reference" in rows[4]["reason"]
    assert rows[4]["ReferencedSeriesInstanceUID"] != vol.info["SeriesInstanceUID"]
    assert [rows[n]["RTROIInterpretedType"] for n in (1, 2, 3)] == ["ORGAN", "MARKER", "CONTROL"]


def test_fill_polygon_triangle_by_hand() -> None:
    # right triangle (0,0) (4,0) (0,4): centres with col + row < 4 strictly, row >= 0
    got = fill_polygon(6, 6, np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]]))
    expected = np.zeros((6, 6), dtype=bool)
    for r in range(6):
        for c in range(6):
            expected[r, c] = c >= 0 and r >= 0 and c + r < 4
    np.testing.assert_array_equal(got, expected)


def test_corpus_rtstruct_roi_table_matches_pydicom(ct_series) -> None:
    _, vol = ct_series
    path = CORPUS / "modality" / "RTSTRUCT" / "rtstruct.dcm"
    ds = pydicom.dcmread(path, force=True)
    got = dfl.read_rtstruct(path, vol)
    rows = got.segments.to_pylist()
    assert [r["ROIName"] for r in rows] == [r.ROIName for r in ds.StructureSetROISequence]
    assert [r["ROINumber"] for r in rows] == [int(r.ROINumber) for r in ds.StructureSetROISequence]
    # its frame of reference is not the synthetic series': nothing is drawn, each says why
    assert not any(r["rasterised"] for r in rows) and all(r["reason"] for r in rows)
    assert not got.labels.any()


def test_a_structure_set_over_two_series_is_read_once_per_series(ct_series, tmp_path) -> None:
    from .conftest import write_ct_series

    _, vol = ct_series
    other = dfl.volumes(dfl.scan([str(p) for p in write_ct_series(tmp_path / "b")], workers=1))[0]
    assert other.info["FrameOfReferenceUID"] != vol.info["FrameOfReferenceUID"]
    path = tmp_path / "rtss.dcm"
    _rtstruct(path, vol, other.info["FrameOfReferenceUID"], other.info["SeriesInstanceUID"])
    first, second = dfl.read_rtstruct(path, vol), dfl.read_rtstruct(path, other)
    assert set(first.masks) == {1} and set(second.masks) == {4}
    expected = np.zeros(other.shape, dtype=bool)
    expected[0, 0:5, 0:5] = True  # centres of columns and rows 0-4 lie inside 0..5 (not 5)
    np.testing.assert_array_equal(second.masks[4], expected)
    rows = {r["ROINumber"]: r for r in second.segments.to_pylist()}
    assert rows[4]["ReferencedSeriesInstanceUID"] == other.info["SeriesInstanceUID"]
    assert "frame of reference" in rows[1]["reason"]
