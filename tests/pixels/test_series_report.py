"""The geometry report per series, on a corpus series and on copies of it altered here.

The series: the first time point of ``series/dcm_qa_nih_ge_mr_0004``, 15 axial EPI slices of
64 x 64, 5 mm apart, declaring 15 Images in Acquisition. Every expected value is worked out
from what a test changed in the files (read back with pydicom), never from dicomflow.
"""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pydicom
import pytest
from conftest import CORPUS

import dicomflow as dfl
from dicomflow.cli import main
from dicomflow.pixels import LOCALIZER_DROPPED, SERIES_SCHEMA

SERIES = CORPUS / "series" / "dcm_qa_nih_ge_mr_0004"
COLUMNS = [*dfl.DEFAULT_COLUMNS, "ImagesInAcquisition"]


def _files() -> list:
    return sorted(SERIES.glob("*.dcm"))[:15]


def _distance(path) -> float:
    """Distance of a slice along its normal, from its own header."""
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    iop = np.array(ds.ImageOrientationPatient, float)
    return float(np.array(ds.ImagePositionPatient, float) @ np.cross(iop[:3], iop[3:]))


def _copy(tmp_path) -> list:
    src = tmp_path / "src"
    src.mkdir(parents=True)
    out = []
    for path in _files():
        shutil.copy(path, src / path.name)
        out.append(src / path.name)
    return sorted(out, key=_distance)  # in slice order


def _report(paths, **kwargs):
    vols = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1, columns=COLUMNS), **kwargs)
    return vols, vols.series_report.to_pylist()


def test_the_untouched_series_is_one_volume_as_declared():
    files = _files()
    distances = sorted({round(_distance(p), 3) for p in files})
    declared = int(pydicom.dcmread(files[0], stop_before_pixels=True).ImagesInAcquisition)
    vols, (row,) = _report(files)
    assert vols.series_report.schema.equals(SERIES_SCHEMA)
    assert row["decision"] == "volume" and row["actions"] == []
    assert row["found_slices"] == row["expected_slices"] == len(distances) == declared == 15
    assert row["declared_slices"] == declared
    assert row["missing_slices"] == row["gap_count"] == 0 and row["gaps"] == []
    assert row["shape"] == [15, 64, 64] and row["volume_index"] == [0]
    assert row["instances"] == row["images"] == 15
    assert not row["mixed_orientations"] and row["orientations"] == 1
    assert row["tilt_degrees"] == pytest.approx(0.0, abs=1e-6)


def test_deleted_slices_are_gaps_and_expected_exceeds_found(tmp_path):
    paths = _copy(tmp_path)
    d = [_distance(p) for p in paths]
    spacing = d[1] - d[0]
    for k in (6, 7, 11):  # two adjacent slices, then one more
        paths[k].unlink()
    kept = [p for p in paths if p.exists()]
    _, (row,) = _report(kept)
    assert row["decision"] == "volume-with-gaps"
    assert row["found_slices"] == 12 and row["shape"] == [12, 64, 64]
    assert row["expected_slices"] == round((d[-1] - d[0]) / spacing) + 1 == 15
    assert row["declared_slices"] == 15  # what the files still say
    assert row["missing_slices"] == 3 and row["gap_count"] == 2
    # kept slices 0..5, 8, 9, 10, 12, 13, 14: the gaps follow volume slices 5 and 8
    (first, second) = row["gaps"]
    assert first["after_slice"] == 5 and first["missing"] == 2
    assert first["from_mm"] == pytest.approx(d[5]) and first["to_mm"] == pytest.approx(d[8])
    assert second["after_slice"] == 8 and second["missing"] == 1
    assert second["from_mm"] == pytest.approx(d[10]) and second["to_mm"] == pytest.approx(d[12])


def test_a_file_copied_twice_and_a_slice_acquired_twice_are_duplicates(tmp_path):
    paths = _copy(tmp_path)
    shutil.copy(paths[3], paths[3].with_name("copy-of-3.dcm"))  # the same instance twice
    _, (row,) = _report([*paths, paths[3].with_name("copy-of-3.dcm")])
    assert row["decision"] == "volume" and row["found_slices"] == 15
    assert row["instances"] == row["images"] == 16
    assert row["duplicate_instances"] == 1 and row["duplicate_positions"] == 0
    assert row["actions"] == ["ignored 1 duplicate instance(s)"]

    again = pydicom.dcmread(paths[9])  # a later image at slice 9's position
    again.SOPInstanceUID = pydicom.uid.generate_uid()
    again.file_meta.MediaStorageSOPInstanceUID = again.SOPInstanceUID
    again.InstanceNumber = 999
    again.save_as(paths[9].with_name("again-9.dcm"))
    vols, (row,) = _report([*paths, paths[9].with_name("again-9.dcm")])
    assert row["duplicate_positions"] == 1 and row["duplicate_instances"] == 0
    assert row["found_slices"] == 15 and row["shape"] == [15, 64, 64]
    assert row["actions"] == ["kept the earliest of 1 duplicate slice(s)"]
    original = pydicom.dcmread(paths[9], stop_before_pixels=True).SOPInstanceUID
    assert vols[0].sop_instance_uids[9] == original


def _add_localizer(paths) -> object:
    scout = pydicom.dcmread(paths[0])
    scout.SOPInstanceUID = pydicom.uid.generate_uid()
    scout.file_meta.MediaStorageSOPInstanceUID = scout.SOPInstanceUID
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # sagittal
    scout.ImagePositionPatient = [0.0, -120.0, 60.0]
    target = paths[0].with_name("scout.dcm")
    scout.save_as(target)
    return target


def test_a_localizer_in_the_series_is_dropped(tmp_path):
    paths = _copy(tmp_path)
    scout = _add_localizer(paths)
    vols, (row,) = _report([*paths, scout])
    assert len(vols) == 1 and vols[0].shape == (15, 64, 64)
    assert row["decision"] == "volume" and row["localizers_dropped"] == 1
    assert row["actions"] == ["dropped 1 localizer image(s)"]
    assert row["instances"] == row["images"] == 16 and row["found_slices"] == 15
    assert (str(scout), LOCALIZER_DROPPED) in vols.skipped
    kept, (row,) = _report([*paths, scout], keep_localizers=True)
    assert len(kept) == 2 and row["localizers_dropped"] == 0
    assert row["decision"] == "split by orientation, image type"
    assert row["mixed_orientations"] and row["orientations"] == 2
    assert row["shape"] is None and sorted(row["shapes"]) == [[1, 64, 64], [15, 64, 64]]


def test_a_sheared_stack_is_tilted_by_the_angle_it_was_sheared_by(tmp_path):
    paths = _copy(tmp_path)
    angle = 12.0
    d0 = _distance(paths[0])
    for path in paths:
        ds = pydicom.dcmread(path)
        ipp = np.array(ds.ImagePositionPatient, float)
        # each slice slides along y (the column direction) by its distance times tan(angle)
        ipp[1] += (_distance(path) - d0) * np.tan(np.radians(angle))
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.save_as(path)
    _, (row,) = _report(paths)
    assert row["decision"] == "volume-tilted"
    assert row["tilt_degrees"] == pytest.approx(angle, abs=1e-3)
    assert row["found_slices"] == row["expected_slices"] == 15 and row["missing_slices"] == 0
    _, (resampled,) = _report(paths, resample=True)
    assert resampled["decision"] == "resampled"
    assert resampled["tilt_degrees"] == pytest.approx(angle, abs=1e-3)  # as acquired


def test_mixed_orientations_split_and_a_series_without_geometry_is_refused():
    table = dfl.scan([str(p) for p in _files()], workers=1).to_arrow().to_pylist()
    mixed = [dict(r) for r in table]
    for i, row in enumerate(mixed[:5]):  # five slices claim to be sagittal
        row["ImageOrientationPatient"] = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        row["ImagePositionPatient"] = [-10.0 + 5 * i, -120.0, 60.0]
    (row,) = dfl.volumes(mixed).series_report.to_pylist()
    assert row["decision"] == "split by orientation"
    assert row["volumes"] == row["stacks"] == 2 and row["mixed_orientations"]
    assert sorted(row["shapes"]) == [[5, 64, 64], [10, 64, 64]]
    refused = [dict(r) for r in table]
    for row in refused:  # positions move along z, the claimed normal is x
        row["ImageOrientationPatient"] = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    (row,) = dfl.volumes(refused).series_report.to_pylist()
    assert row["decision"] == "refused: geometry: all slices are at the same position"
    assert row["volumes"] == 0 and row["refused_images"] == 15 and row["shapes"] == []


def test_series_without_images_and_multiframe_declared_frames():
    sr = CORPUS / "modality" / "SR"
    report = dfl.volumes(dfl.scan(str(sr), workers=1)).series_report
    assert report.num_rows > 0 and set(report.column("decision").to_pylist()) == {"no image"}
    enhanced = sorted((CORPUS / "multiframe" / "enhanced-mr-philips").glob("*.dcm"))
    frames = sum(int(pydicom.dcmread(p, stop_before_pixels=True).NumberOfFrames) for p in enhanced)
    (row,) = dfl.volumes(dfl.scan([str(p) for p in enhanced], workers=1)).series_report.to_pylist()
    assert row["declared_frames"] == row["images"] == frames
    assert row["decision"].startswith("split by")


def test_export_writes_the_series_table_a_pipeline_filters_on(tmp_path, capsys):
    data = tmp_path / "data"
    gapped = _copy(data)
    gapped[4].unlink()
    scout = _add_localizer(gapped)
    whole = data / "whole"
    whole.mkdir()
    uid = pydicom.uid.generate_uid()
    for path in _files():  # the untouched slices as a second series
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SeriesNumber = uid, 40
        ds.save_as(whole / path.name)
    out = tmp_path / "out"
    rc = main(["export", str(data / "src"), str(out), "--format", "nifti"])
    err = capsys.readouterr().err
    assert rc == 0, err  # a dropped localizer is not a failure
    assert "series: 1 volume-with-gaps" in err
    rc = main(["export", str(data), str(tmp_path / "both"), "--format", "zarr"])
    assert rc == 0, capsys.readouterr().err
    series = pl.read_parquet(tmp_path / "both" / "export-series.parquet")
    volumes = pl.read_parquet(tmp_path / "both" / "export-report.parquet")
    gaps = series.filter(pl.col("decision") == "volume-with-gaps")
    original = pydicom.dcmread(_files()[0], stop_before_pixels=True).SeriesInstanceUID
    assert gaps["series_instance_uid"].to_list() == [original]
    assert gaps["localizers_dropped"].to_list() == [1] and gaps["missing_slices"].to_list() == [1]
    clean = series.filter(pl.col("decision") == "volume")
    assert clean["series_instance_uid"].to_list() == [uid]
    (index,) = clean["volume_index"].to_list()[0]
    assert volumes["series_instance_uid"][index] == uid
    assert volumes["output"][index].endswith(".zarr")
    assert pq.read_schema(tmp_path / "both" / "export-series.parquet").equals(SERIES_SCHEMA)
    assert str(scout) in pl.read_parquet(tmp_path / "both" / "export-skipped.parquet")["uri"]


def test_info_geometry_reads_the_report_from_a_catalog(tmp_path, capsys):
    import json

    paths = _copy(tmp_path)
    paths[10].unlink()
    _add_localizer(paths)
    catalog = tmp_path / "catalog.parquet"
    assert main(["scan", str(tmp_path / "src"), "-o", str(catalog), "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["info", str(catalog), "--geometry", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["decisions"] == {"volume-with-gaps": 1}
    (row,) = doc["series"]
    assert row["found_slices"] == 14 and row["expected_slices"] == 15
    assert row["missing_slices"] == 1 and row["localizers_dropped"] == 1
    assert row["gaps"][0]["after_slice"] == 9  # slices 0..9 kept before the deleted 10th
    assert main(["info", str(catalog), "--geometry"]) == 0
    out = capsys.readouterr().out
    assert "1 series: 1 volume-with-gaps" in out and "volume-with-gaps" in out
