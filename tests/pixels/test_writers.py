"""Zarr, PNG, xarray and the export command, read back and checked."""

from __future__ import annotations

import json

import imagecodecs
import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
import zarr
from conftest import CORPUS, catalog_row, catalog_table

from dicomflow.cli import main
from dicomflow.pixels import PRESETS, apply_window, volumes


@pytest.fixture(scope="module")
def fmri():
    files = sorted((CORPUS / "series/dcm_qa_nih_ge_mr_0007").glob("*.dcm"))
    return volumes(catalog_table(files))[0]


@pytest.fixture(scope="module")
def ct():
    files = sorted((CORPUS / "series/dcm_qa_ct_ge").glob("*.dcm"))
    return volumes(catalog_table(files))[0]


def test_zarr_round_trip_with_provenance(fmri, tmp_path):
    path = fmri.to_zarr(tmp_path / "fmri.zarr", levels=2)
    group = zarr.open_group(path, mode="r")
    full = group["0"]
    assert full.shape == fmri.shape and full.chunks == (1, 1, 64, 64)
    assert full.metadata.zarr_format == 3 and full.compressors
    assert np.array_equal(full[:], fmri.array.compute())
    assert group["1"].shape == (10, 15, 32, 32)
    ome = group.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ome["axes"]] == ["t", "z", "y", "x"]
    assert ome["datasets"][0]["coordinateTransformations"][0]["scale"] == [5.0, 5.0, 3.75, 3.75]
    meta = group.attrs["dicomflow"]
    assert np.allclose(meta["affine_lps"], fmri.affine)
    uids = meta["source_sop_instance_uids"]
    assert len(uids) == 150 and len(set(uids)) == 150
    assert uids[0] == fmri.planes[0].sop_instance_uid


def test_zarr_shards_big_volumes(ct, tmp_path):
    path = ct.to_zarr(tmp_path / "ct.zarr", shard_slices=8, compressor="blosc")
    full = zarr.open_group(path, mode="r")["0"]
    assert full.shards == (8, 512, 512) and full.chunks == (1, 512, 512)
    assert np.array_equal(full[5:7], ct.array[5:7].compute())


def test_png_uses_the_dicom_window(ct, tmp_path):
    path = ct.to_png(tmp_path / "ct.png", index=3)
    image = imagecodecs.png_decode(path.read_bytes())
    ds = pydicom.dcmread(ct.planes[3].ref.uri)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    center, width = (
        float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter),
        float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth),
    )
    assert image.shape == (512, 512) and image.dtype == np.uint8
    assert np.array_equal(image, apply_window(hu, center, width))
    lung = imagecodecs.png_decode(
        ct.to_png(tmp_path / "lung.png", index=3, window="lung").read_bytes()
    )
    assert np.array_equal(lung, apply_window(hu, *PRESETS["lung"]))


def test_window_function_follows_the_standard():
    values = np.array([-1000.0, 0.0, 39.5, 40.0, 79.0, 80.0, 1000.0])
    out = apply_window(values, 40.0, 80.0)
    assert out[0] == 0 and out[-1] == 255 and out[1] == 0
    assert 125 <= out[2] <= 130


def test_xarray_has_physical_coordinates(fmri):
    pytest.importorskip("xarray")
    da = fmri.to_xarray()
    assert da.dims == ("t", "z", "y", "x")
    assert float(da.z[1] - da.z[0]) == pytest.approx(5.0)
    assert float(da.x[1] - da.x[0]) == pytest.approx(3.75)
    assert np.allclose(da.attrs["affine_lps"], fmri.affine)
    assert np.array_equal(da.isel(t=2, z=4).values, fmri.array[2, 4].compute())


def test_nii_gz_and_sidecar(fmri, tmp_path):
    path = fmri.to_nifti(tmp_path / "bold.nii.gz")
    img = nib.load(path)
    assert img.shape == (64, 64, 15, 10)
    assert np.array_equal(np.asarray(img.dataobj)[:, ::-1, 4, 2].T, fmri.array[2, 4].compute())
    sidecar = json.loads((tmp_path / "bold.json").read_text())
    assert sidecar["RepetitionTime"] == pytest.approx(5.0)
    assert sidecar["EchoTime"] == pytest.approx(0.03)
    assert sidecar["SeriesInstanceUID"] == fmri.info["SeriesInstanceUID"]


@pytest.mark.parametrize(
    "files",
    [
        "series/dcm_qa_ct_ge/*.dcm",  # 3-D CT, int16 with a rescale
        "series/dcm_qa_nih_ge_mr_0007/*.dcm",  # 4-D fMRI
        "transfer-syntax/rle/SC_rgb_rle_2frame.dcm",  # colour, RGB24
    ],
)
def test_frames_read_directly_give_the_dask_graphs_file(files, tmp_path):
    """A plain stack is written by reading its frames in a thread pool: the file must be the
    one the dask graph gives, byte for byte, and no temporary file may be left."""
    from dataclasses import replace

    from dicomflow.pixels._nifti import _frames_directly, _layout_parts

    (vol,) = volumes(catalog_table(sorted(CORPUS.glob(files))))
    assert vol.stacked and _frames_directly(vol, "auto", _layout_parts(vol, "auto")[2])
    direct = vol.to_nifti(tmp_path / "direct.nii")
    through_dask = replace(vol, stacked=False).to_nifti(tmp_path / "dask.nii")
    assert direct.read_bytes() == through_dask.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dask.json", "dask.nii", "direct.json", "direct.nii"
    ]  # fmt: skip


@pytest.mark.parametrize("direct", [True, False])
def test_a_frame_that_cannot_be_decoded_leaves_no_file(direct, tmp_path):
    from dataclasses import replace

    from dicomflow.pixels import FrameDecodeError, locate_frames

    name = "CT0012.not_fragmented_bot_jpeg_ls.80.dcm"
    broken = tmp_path / "in" / name
    broken.parent.mkdir()
    data = bytearray((CORPUS / "encapsulation" / name).read_bytes())
    broken.write_bytes(bytes(data))
    start = locate_frames([catalog_row(broken)])["frame_offsets"][0].as_py()[1] + 8
    data[start : start + 64] = b"\x00" * 64  # frame 1 loses the start of its codestream
    broken.write_bytes(bytes(data))
    (vol,) = volumes(catalog_table([broken]))
    vol = vol if direct else replace(vol, stacked=False)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(FrameDecodeError, match=f"{name}: frame 1"):
        vol.to_nifti(out / "ct.nii")
    assert not any(out.iterdir())  # neither the file nor a temporary one


@pytest.mark.parametrize("folder", ["series/dcm_qa_siemens_sag_asc_36sl", "series/dcm_qa_ts"])
def test_reorientation_is_lossless_and_matches_nibabel(folder, tmp_path):
    files = [p for p in sorted((CORPUS / folder).iterdir()) if p.name.startswith(("MR.", "1."))]
    files = files[:1]
    vol = volumes(catalog_table(files))[0]
    plain = nib.load(vol.to_nifti(tmp_path / "plain.nii", reorient=False))
    ras = nib.load(vol.to_nifti(tmp_path / "ras.nii", reorient=True))
    canonical = nib.as_closest_canonical(plain)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    assert np.allclose(ras.affine, canonical.affine, atol=1e-4)
    assert np.array_equal(np.asarray(ras.dataobj), np.asarray(canonical.dataobj))


def test_image_without_geometry_is_written_with_unknown_orientation(tmp_path):
    path = CORPUS / "transfer-syntax/jpeg-baseline/JPEGBaseline_1s_1f_u_08_08.dcm"
    vol = volumes(catalog_table([path]))[0]
    assert vol.grid is None
    img = nib.load(vol.to_nifti(tmp_path / "sc.nii"))
    assert img.header["sform_code"] == 0 and img.header["qform_code"] == 0
    assert np.array_equal(np.asarray(img.dataobj)[:, ::-1, 0].T, vol.array[0].compute())


def test_slices_scaled_differently_are_written_as_real_values(tmp_path):
    files = sorted((CORPUS / "series/dcm_qa_nih_ge_mr_0007").glob("*.dcm"))[:15]
    rows = catalog_table(files).to_pylist()
    for i, row in enumerate(rows):  # as PET does: one slope per slice
        row["RescaleSlope"], row["RescaleIntercept"] = 0.5 + i, -3.0
    vol = volumes(rows)[0]
    assert vol.rescale is None
    img = nib.load(vol.to_nifti(tmp_path / "pet.nii"))
    assert img.get_data_dtype() == np.float32
    data = np.asarray(img.dataobj)[:, ::-1, :].transpose(2, 1, 0)
    raw = vol.array.compute()
    slopes = np.array([p.slope for p in vol.planes], np.float32)[:, None, None]
    assert np.allclose(data, raw * slopes - 3.0)


def test_export_command_writes_one_output_per_volume(tmp_path, capsys):
    files = sorted((CORPUS / "series/dcm_qa_ts").glob("*.dcm"))[:3]
    files += sorted((CORPUS / "series/dcm_qa_ct_ge").glob("*.dcm"))
    catalog = tmp_path / "catalog.parquet"
    pq.write_table(catalog_table(files), catalog)
    out = tmp_path / "out"
    assert main(["export", str(catalog), str(out), "--format", "nifti"]) == 0
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert len(written) == 4
    report = pq.read_table(out / "export-report.parquet").to_pylist()
    assert [r["status"] for r in report] == ["written"] * 4
    tilted = [r for r in report if r["tilt_degrees"] > 1]
    assert len(tilted) == 1 and tilted[0]["irregular_spacing"]
    err = capsys.readouterr().err
    assert "gantry tilt" in err and "4 written, 0 failed" in err
    assert (
        main(
            ["export", str(catalog), str(tmp_path / "png"), "--format", "png", "--window", "brain"]
        )
        == 0
    )
    assert len(list((tmp_path / "png").glob("*.png"))) == 4
    assert main(["export", str(catalog), str(tmp_path / "z"), "--format", "zarr"]) == 0
    assert len(list((tmp_path / "z").glob("*.zarr"))) == 4


def test_export_scans_a_folder(tmp_path):
    pytest.importorskip("dicomflow.catalog")
    out = tmp_path / "out"
    src = CORPUS / "series/dcm_qa_nih_siemens_mr_0003"
    assert main(["export", str(src), str(out), "--uncompressed"]) == 0
    (nii,) = out.glob("*.nii")
    ref = nib.load(src / "reference" / "EPI_PE=AP_3.nii")
    ours = nib.load(nii)
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))
    assert np.abs(ours.affine - ref.affine).max() < 1e-3


def _series(tmp_path, corpus, orientation, n=4, spacing=2.5):
    """``n`` copies of a corpus CT slice as one series with this orientation, stacked along
    the normal from (10, -20, 30)."""
    from pydicom.uid import generate_uid

    row, col = np.array(orientation[:3]), np.array(orientation[3:])
    normal = np.cross(row, col)
    series = generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(corpus / "modality/CT/highdicom_ct_image.dcm")
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.ImageOrientationPatient = [float(v) for v in orientation]
        ds.ImagePositionPatient = [
            float(v) for v in np.array([10.0, -20.0, 30.0]) + k * spacing * normal
        ]
        ds.InstanceNumber = k + 1
        ds.save_as(tmp_path / f"{k}.dcm")
    (vol,) = volumes(str(tmp_path))
    return vol


@pytest.mark.parametrize(
    "orientation",
    [(1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, -1), (0.866025, 0.5, 0, -0.5, 0.866025, 0)],
    ids=["axial", "sagittal", "oblique"],
)
def test_xarray_coordinates_are_patient_positions(tmp_path, corpus, orientation):
    pytest.importorskip("xarray")
    vol = _series(tmp_path, corpus, orientation)
    da = vol.to_xarray()
    for k, j, i in [(0, 0, 0), (3, 7, 11), (2, 100, 5)]:
        want = vol.affine @ np.array([i, j, k, 1.0])
        if da.z.attrs["patient_axis"] is not None:
            got = {da[d].attrs["patient_axis"]: float(da[d][n]) for d, n in zip("zyx", (k, j, i))}
            assert [got[a] for a in "LPS"] == pytest.approx(want[:3].tolist())
        else:  # oblique: per-voxel coordinates
            got = [float(da[a][k, j, i]) for a in "LPS"]
            assert got == pytest.approx(want[:3].tolist())
    assert da.z.attrs["units"] == "mm"
    if orientation[0] == 1:  # axial: z is S, and selecting by position picks the slice
        assert da.z.attrs["patient_axis"] == "S"
        assert float(da.sel(z=30.0 + 2 * 2.5, method="nearest").z) == pytest.approx(35.0)
