"""Volumes and NIfTI proven against dcm2niix: the references in the corpus, and a live run."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import CORPUS, catalog_table

from dicomflow.pixels import Volumes, volumes

REFERENCES = {
    "series/dcm_qa_nih_ge_mr_0004": ["DCM2NIIX_regression_test_4.nii"],
    "series/dcm_qa_nih_ge_mr_0007": ["DCM2NIIX_regression_test_7.nii"],
    "series/dcm_qa_nih_siemens_mr_0003": ["EPI_PE=AP_3.nii"],
    "series/dcm_qa_siemens_cor_int_36sl": ["cor_int_36sl_15.nii"],
    "series/dcm_qa_siemens_sag_asc_36sl": ["sag_asc_36sl_19.nii"],
    "series/dcm_qa_ts": [f"{i}.nii" for i in range(1, 10)],
    "multiframe/enhanced-mr-philips": [
        "Philips_WIP_B0_NS_801_e1.nii",
        "Philips_WIP_B0_NS_801_e2_fieldmaphz.nii",
    ],
    "multiframe/enhanced-mr-siemens-xa10": ["Siemens_REST1_w_SMS_PF7-8_6.nii"],
}


def _dicom_files(folder):
    return sorted(
        p
        for p in (CORPUS / folder).iterdir()
        if p.is_file() and p.suffix not in (".txt", ".md", ".json") and "LICENSE" not in p.name
    )


@pytest.fixture(scope="module")
def folder_volumes():
    cache: dict[str, Volumes] = {}

    def get(folder):
        if folder not in cache:
            cache[folder] = volumes(catalog_table(_dicom_files(folder)))
        return cache[folder]

    return get


def test_every_reference_is_covered():
    shipped = {str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*/reference/*.nii")}
    covered = {
        f"{folder}/reference/{name}" for folder, names in REFERENCES.items() for name in names
    }
    assert shipped == covered


@pytest.mark.parametrize(
    ("folder", "index", "reference"),
    [(f, i, r) for f, refs in REFERENCES.items() for i, r in enumerate(refs)],
)
def test_nifti_matches_dcm2niix_reference(folder, index, reference, folder_volumes, tmp_path):
    vols = folder_volumes(folder)
    assert len(vols) == len(REFERENCES[folder])
    out = vols[index].to_nifti(tmp_path / "out.nii")
    ours, ref = nib.load(out), nib.load(CORPUS / folder / "reference" / reference)
    a = np.asarray(ours.dataobj.get_unscaled())
    b = np.asarray(ref.dataobj.get_unscaled())
    assert a.shape == b.shape
    assert np.array_equal(a.astype(np.int64), b.astype(np.int64))  # same values, same layout
    assert np.abs(ours.affine - ref.affine).max() < 1e-3  # mm
    assert ours.header["sform_code"] == 1 and ours.header["qform_code"] == 1
    assert np.abs(ours.header.get_qform() - ref.affine).max() < 1e-3
    if len(b.shape) == 4:
        assert ours.header.get_zooms()[3] == pytest.approx(ref.header.get_zooms()[3], rel=1e-3)
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["ConversionSoftware"] == "dicomflow"
    assert len(sidecar["SourceSOPInstanceUIDs"]) == int(np.prod(a.shape[2:]))


def test_fmri_repeats_are_ordered_in_time(folder_volumes):
    vol = folder_volumes("series/dcm_qa_nih_ge_mr_0004")[0]
    assert vol.shape == (10, 15, 64, 64) and vol.is_4d
    instance = np.array([p.row["InstanceNumber"] for p in vol.planes]).reshape(10, 15)
    # interleaved acquisition, but time-major with slices sorted inferior to superior
    assert np.all(np.diff(instance.min(axis=1)) > 0)
    z = np.array([p.position[2] for p in vol.planes]).reshape(10, 15)
    assert np.all(np.diff(z, axis=1) > 0) and np.all(z == z[0])


def test_report_is_a_filterable_table(folder_volumes):
    vols = folder_volumes("series/dcm_qa_ts")
    report = vols.to_polars()
    assert report.height == 9
    assert set(report["shape"].to_list()[0]) == {35, 64}
    assert report["SeriesNumber"].to_list() == [float(i) for i in range(1, 10)]
    assert not report["irregular_spacing"].any()
    assert report["spacing"].to_list()[0] == pytest.approx([3.6, 3.25, 3.25], abs=1e-4)


def test_missing_slice_is_reported(tmp_path):
    files = _dicom_files("series/dcm_qa_nih_ge_mr_0007")
    z_of = {
        p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2]) for p in files
    }
    positions = sorted(set(z_of.values()))
    dropped = positions[7]
    kept = [p for p in files if z_of[p] != dropped]
    vol = volumes(catalog_table(kept))[0]
    assert vol.shape == (10, 14, 64, 64)
    assert vol.info["missing_slices"] == 1
    assert any("missing" in w for w in vol.warnings)


def test_duplicate_and_incomplete_repeats_are_reported():
    files = _dicom_files("series/dcm_qa_nih_ge_mr_0004")
    table = catalog_table(files[:-3])  # the last volume lacks 3 slices
    vol = volumes(table)[0]
    assert vol.shape == (9, 15, 64, 64)
    assert vol.info["dropped_images"] == 12
    assert any("incomplete" in w for w in vol.warnings)
    twice = catalog_table([*files[:15], files[0]])  # one instance listed twice
    vol = volumes(twice)[0]
    assert vol.shape == (15, 64, 64)
    assert any("duplicate instance" in w for w in vol.warnings)


def test_orientations_and_sizes_split_into_volumes():
    files = _dicom_files("series/dcm_qa_nih_ge_mr_0004")[:15]
    table = catalog_table(files).to_pylist()
    for i, row in enumerate(table[:5]):  # pretend five slices were acquired sagittally
        row["ImageOrientationPatient"] = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
        row["ImagePositionPatient"] = [-10.0 + 5 * i, -120.0, 60.0]
    vols = volumes(table)
    assert sorted(v.shape[0] for v in vols) == [5, 10]
    assert all("series split into 2 stacks" in v.warnings[0] for v in vols)
    assert {tuple(np.round(v.info["orientation"], 3)) for v in vols} == {
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    }


def test_slices_displaced_only_in_plane_are_refused_not_guessed():
    files = _dicom_files("series/dcm_qa_nih_ge_mr_0004")[:15]
    table = catalog_table(files).to_pylist()
    for row in table:  # positions move along z, the claimed normal is x: no consistent stack
        row["ImageOrientationPatient"] = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    vols = volumes(table)
    assert len(vols) == 0
    assert len(vols.skipped) == 15 and "same position" in vols.skipped[0][1]


def test_enhanced_multiframe_split_by_frame_type(folder_volumes):
    e1, e2 = folder_volumes("multiframe/enhanced-mr-philips")
    assert e1.info["ImageType"][-1] == "M" and e2.info["ImageType"][-1] == "FIELD_MAP"
    assert e1.rescale != e2.rescale  # per-frame Pixel Value Transformation
    assert e2.rescale == pytest.approx((0.24420024420024, -500.0))


def test_siemens_mosaic_is_cut_into_slices(folder_volumes):
    vol = folder_volumes("series/dcm_qa_siemens_sag_asc_36sl")[0]
    assert vol.shape == (2, 36, 64, 64)
    mosaic = pydicom.dcmread(_dicom_files("series/dcm_qa_siemens_sag_asc_36sl")[0]).pixel_array
    assert np.array_equal(vol.array[0, 7].compute(), mosaic[64:128, 64:128])
    assert vol.info["SliceTiming"][1] == pytest.approx(0.07, abs=1e-6)


def _ge_ct():
    return volumes(catalog_table(_dicom_files("series/dcm_qa_ct_ge")))


def test_gantry_tilt_and_uneven_spacing_are_reported():
    (vol,) = _ge_ct()
    assert vol.info["tilt_degrees"] == pytest.approx(18.5, abs=0.05)
    assert vol.info["irregular_spacing"]
    assert vol.info["missing_slices"] == 0  # 7 mm gaps are not a multiple of 4 mm
    assert any("tilt" in w for w in vol.warnings)
    assert any("irregular" in w for w in vol.warnings)


def test_tilted_4d_series_is_kept_as_acquired_when_resampling_is_asked(tmp_path):
    """Resampling handles 3-D stacks: a tilted series repeated over time is reported with a
    warning, never a crash of the whole call."""
    for path in _dicom_files("series/dcm_qa_ct_ge"):
        for repeat in (1, 2):
            ds = pydicom.dcmread(path)
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.TemporalPositionIdentifier = repeat
            ds.save_as(tmp_path / f"{repeat}-{path.name}")
    (vol,) = volumes(catalog_table(sorted(tmp_path.glob("*"))), resample=True)
    assert vol.is_4d and vol.shape[0] == 2
    assert vol.info["tilt_degrees"] == pytest.approx(18.5, abs=0.05)
    assert any("not resampled" in w for w in vol.warnings)
    (three_d,) = volumes(catalog_table(_dicom_files("series/dcm_qa_ct_ge")), resample=True)
    assert three_d.info.get("resampled") and three_d.info["tilt_degrees"] == 0.0


def _centroid_ras(points_lps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    c = (points_lps * weights[:, None]).sum(0) / weights.sum()
    return c * [-1, -1, 1]


def _truth_centroid(threshold: float) -> np.ndarray:
    """Centroid of the tissue above ``threshold`` from the DICOM slices' own geometry."""
    ds = sorted(
        (pydicom.dcmread(p) for p in _dicom_files("series/dcm_qa_ct_ge")),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    pos = np.array([d.ImagePositionPatient for d in ds], float)
    slab = np.gradient(pos[:, 2])
    iop = np.array(ds[0].ImageOrientationPatient, float)
    dr, dc = (float(v) for v in ds[0].PixelSpacing)
    points, weights = [], []
    for d, p, w in zip(ds, pos, slab, strict=True):
        r, c = np.nonzero(
            d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) > threshold
        )
        points.append(p + np.outer(c * dc, iop[:3]) + np.outer(r * dr, iop[3:]))
        weights.append(np.full(len(r), w))
    return _centroid_ras(np.concatenate(points), np.concatenate(weights))


def _nifti_centroid(img, threshold: float) -> np.ndarray:
    data = np.asarray(img.dataobj)
    ijk = np.argwhere(data > threshold)
    return nib.affines.apply_affine(img.affine, ijk).mean(axis=0)


@pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="dcm2niix is not installed")
def test_ge_ct_with_tilt_against_dcm2niix_run_here(tmp_path):
    out = tmp_path / "d2n"
    out.mkdir()
    run = subprocess.run(
        ["dcm2niix", "-f", "ct", "-o", str(out), str(CORPUS / "series/dcm_qa_ct_ge")],
        capture_output=True,
        text=True,
        check=True,
    )
    log = run.stdout + run.stderr
    tilt = float(re.search(r"Gantry Tilt based on 0018,1120 ([\d.]+)", log).group(1))
    (vol,) = _ge_ct()
    # dcm2niix sees the same tilt and the same uneven spacing
    assert vol.info["tilt_degrees"] == pytest.approx(tilt, abs=0.05)
    assert ("Interslice distance varies" in log) == vol.info["irregular_spacing"]
    # as acquired: same voxels in the same layout, same origin and in-plane axis
    ours = nib.load(vol.to_nifti(tmp_path / "ours.nii"))
    ref = nib.load(out / "ct.nii")
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))
    assert np.abs(ours.affine[:, 3] - ref.affine[:, 3]).max() < 1e-3
    assert np.abs(ours.affine[:, 0] - ref.affine[:, 0]).max() < 1e-3
    # our sheared affine is exact for the first 14 (evenly spaced) slices
    first = _dicom_files("series/dcm_qa_ct_ge")[13]
    ipp = np.array(pydicom.dcmread(first, stop_before_pixels=True).ImagePositionPatient, float)
    corner = vol.affine @ [0, 0, 13, 1]
    assert np.abs(corner[:3] - ipp).max() < 1e-3
    assert ours.header["qform_code"] == 0  # a qform cannot hold the shear: not written wrong
    # tilt-corrected: same extended field of view as dcm2niix's, anatomy where the DICOM says
    resampled = nib.load(vol.resampled().to_nifti(tmp_path / "tilt.nii"))
    (tilt_ref,) = out.glob("ct_Tilt*.nii")
    assert resampled.shape[:2] == nib.load(tilt_ref).shape[:2]
    for threshold in (300.0, -300.0):
        truth = _truth_centroid(threshold)
        assert np.abs(_nifti_centroid(resampled, threshold) - truth).max() < 2.0
    spacing = resampled.header.get_zooms()
    affine = resampled.affine[:3, :3] / spacing
    assert np.abs(affine.T @ affine - np.eye(3)).max() < 1e-4  # orthogonal grid


def test_volumes_from_pyarrow_polars_and_pandas_are_the_same():
    """pandas holds integer columns with nulls as floats (pixel_offset 1234.0): the volumes
    of ``cat.to_pandas()`` were a TypeError deep in a seek; now all three agree."""
    import polars as pl

    table = catalog_table(sorted((CORPUS / "modality").rglob("*.dcm")))
    assert table.column("pixel_offset").null_count  # some rows without pixels: floats in pandas
    frame = table.to_pandas()
    assert frame["pixel_offset"].dtype.kind == "f"
    results = [volumes(x) for x in (table, pl.from_arrow(table), frame)]
    reports = [r.report.to_pylist() for r in results]
    assert reports[0] == reports[1] == reports[2] and len(results[0]) > 10
    assert [len(r.skipped) for r in results] == [len(results[0].skipped)] * 3
    first = [np.asarray(r[0].array[0]) for r in results]
    assert np.array_equal(first[0], first[2]) and np.array_equal(first[0], first[1])


def test_pixel_spacing_of_zero_is_written_like_dcm2niix_with_a_warning(tmp_path):
    """Pixel Spacing 0\\0 made the NIfTI export fail (a degenerate affine); dcm2niix writes the
    image with 1 mm voxels. Now the same voxel sizes and voxels, a valid affine, and why."""
    src = tmp_path / "zero"
    src.mkdir()
    for i, path in enumerate(_dicom_files("series/dcm_qa_nih_ge_mr_0007")[:14]):
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [0, 0]
        ds.save_as(src / f"{i:03}.dcm")
    out = tmp_path / "d2n"
    out.mkdir()
    subprocess.run(["dcm2niix", "-f", "ref", "-o", str(out), str(src)], capture_output=True,
                   check=True)  # fmt: skip
    ref = nib.load(out / "ref.nii")
    (vol,) = volumes(catalog_table(sorted(src.glob("*.dcm"))))
    assert "Pixel Spacing 0\\0 is not a spacing: 1 mm assumed" in vol.warnings
    ours = nib.load(vol.to_nifti(tmp_path / "ours.nii"))
    assert ours.header.get_zooms() == pytest.approx(ref.header.get_zooms(), abs=1e-4)
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))
    assert abs(np.linalg.det(ours.affine[:3, :3])) > 0  # dcm2niix's is all zeros in plane


def test_a_mosaic_larger_than_its_grid_of_tiles_is_still_cut(tmp_path):
    """A mosaic whose size is not a multiple of its tiles per side (here 384 + 4 for 6 x 6
    tiles of 64) was not split: a stack of whole mosaics with a false gantry tilt. Cut from the
    top left, with its Image Position moved so that the tiles stay where they were: the same
    voxels and the same affine as the real mosaic (whose volume equals dcm2niix's reference)."""
    originals = _dicom_files("series/dcm_qa_siemens_sag_asc_36sl")
    padded = tmp_path / "padded"
    padded.mkdir()
    for i, path in enumerate(originals):
        ds = pydicom.dcmread(path)
        image = ds.pixel_array
        big = np.zeros((image.shape[0] + 4, image.shape[1] + 4), image.dtype)
        big[: image.shape[0], : image.shape[1]] = image
        iop = np.array(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        # the first tile's corner is IPP + (mosaic - tile) / 2 in each direction: 2 more pixels
        ipp = np.array(ds.ImagePositionPatient, float) - 2 * (iop[:3] * dc + iop[3:] * dr)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in ipp]
        ds.Rows, ds.Columns = big.shape
        ds.PixelData = big.tobytes()
        ds.save_as(padded / f"{i:03}.dcm")
    (want,) = volumes(catalog_table(originals))
    (got,) = volumes(catalog_table(sorted(padded.glob("*.dcm"))))
    assert got.shape == want.shape
    assert not any("tilt" in w for w in got.warnings)
    assert np.array_equal(got.array.compute(), want.array.compute())
    assert np.abs(got.affine - want.affine).max() < 1e-3
