"""Colour volumes as NIfTI RGB24, proven against dcm2niix run here on the same files.

dcm2niix (the Debian build, v1.0.20220720 here) is the reference only where it decodes exactly
what pydicom decodes. Left out, on purpose:

* ``examples_ybr_color.dcm``, ``IM00001...jpeg_baseline.50.dcm`` (multi-frame JPEG): dcm2niix
  refuses them ("Compressed image stored as N fragments"); tested against pydicom below;
* lossy JPEG in YBR (``SC_rgb_jpeg_dcmtk.dcm``, ``JPEGExtended_3s_1f_u_08_08.dcm``): its own
  JPEG decoder differs from libjpeg's (and pydicom's) by up to 7 levels;
* ``SC_rgb_rle_2frame.dcm``: it decodes the second RLE frame wrongly;
* ``SC_rgb_small_odd_big_endian.dcm``: it swaps the bytes of 8-bit OW big endian data;
* 16-bit RGB: it refuses it ("Unsupported DICOM bit-depth 16 with 3 samples"), as we do.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import CORPUS, catalog_table
from pydicom.uid import ExplicitVRLittleEndian

from dicomflow import ConfigError
from dicomflow.pixels import PixelOptions, volumes

needs_dcm2niix = pytest.mark.skipif(
    shutil.which("dcm2niix") is None, reason="dcm2niix is not installed"
)

#: colour objects dcm2niix converts exactly (none in the corpus carries patient geometry)
OBJECTS = [
    "transfer-syntax/explicit-vr-le/examples_rgb_color.dcm",  # US, native RGB
    "transfer-syntax/jpeg-lossless-sv1/JPEGLosslessP14SV1_3s_2f_u_08_08.dcm",  # US, 2 frames
    "transfer-syntax/rle/SC_rgb_rle.dcm",  # RLE, planar by segment
    "transfer-syntax/explicit-vr-le/SC_rgb_small_odd.dcm",  # 3 x 3, 33.3 mm pixels
]


def _dcm2niix(files: list[Path], out: Path) -> nib.Nifti1Image:
    """dcm2niix's NIfTI of exactly ``files`` (it converts whole folders)."""
    folder = out / "in"
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / f.name)
    subprocess.run(
        ["dcm2niix", "-b", "n", "-f", "ref", "-o", str(out), str(folder)],
        capture_output=True,
        text=True,
        check=True,
    )
    return nib.load(out / "ref.nii")


def _same_as_dcm2niix(ours: nib.Nifti1Image, ref: nib.Nifti1Image) -> None:
    assert ref.header["datatype"] == ours.header["datatype"] == 128  # RGB24
    assert ours.shape == ref.shape
    assert ours.get_data_dtype() == ref.get_data_dtype()
    assert np.array_equal(np.asarray(ours.dataobj), np.asarray(ref.dataobj))  # every triplet
    assert np.abs(ours.affine - ref.affine).max() < 1e-3  # mm
    assert ours.header["sform_code"] == ref.header["sform_code"]
    assert ours.header["qform_code"] == ref.header["qform_code"]
    assert np.allclose(ours.header.get_zooms(), ref.header.get_zooms(), atol=1e-4)


@needs_dcm2niix
@pytest.mark.parametrize("path", OBJECTS)
def test_colour_object_matches_dcm2niix(path, tmp_path):
    source = CORPUS / path
    (vol,) = volumes(catalog_table([source]))
    ours = nib.load(vol.to_nifti(tmp_path / "ours.nii"))
    _same_as_dcm2niix(ours, _dcm2niix([source], tmp_path / "d2n"))


def _colour_series(folder: Path, files: list[Path], planar: int) -> list[Path]:
    """The corpus slices as 8-bit RGB (three different functions of the grey values).

    Geometry, identity and order stay those of the real series; only the pixels change.
    """
    folder.mkdir()
    out = []
    for f in files:
        ds = pydicom.dcmread(f)
        v = ds.pixel_array.astype(np.int64)
        rgb = np.stack([v * 255 // max(int(v.max()), 1), 255 - v % 256, v * 7 % 256], axis=-1)
        rgb = rgb.astype(np.uint8)
        ds.PixelData = (rgb.transpose(2, 0, 1) if planar else rgb).tobytes()
        ds["PixelData"].VR = "OB"
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", planar
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        for keyword in ("WindowCenter", "WindowWidth", "SmallestImagePixelValue",
                        "LargestImagePixelValue"):  # fmt: skip
            if keyword in ds:
                del ds[keyword]
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / f.name, enforce_file_format=True)
        out.append(folder / f.name)
    return out


@needs_dcm2niix
@pytest.mark.parametrize(("slices", "planar"), [(15, 0), (15, 1), (30, 0)])
def test_rgb_series_with_geometry_matches_dcm2niix(slices, planar, tmp_path):
    grey = sorted((CORPUS / "series/dcm_qa_nih_ge_mr_0007").glob("*.dcm"))[:slices]
    files = _colour_series(tmp_path / "rgb", grey, planar)
    (vol,) = volumes(catalog_table(files))
    assert vol.grid is not None and vol.is_4d == (slices == 30)
    ours = nib.load(vol.to_nifti(tmp_path / "ours.nii.gz"))
    ref = _dcm2niix(files, tmp_path / "d2n")
    assert ours.header["sform_code"] == 1  # real patient geometry, not only a voxel size
    _same_as_dcm2niix(ours, ref)
    # and the same affine as the grey series it came from
    grey_nifti = nib.load(volumes(catalog_table(grey))[0].to_nifti(tmp_path / "grey.nii"))
    assert np.abs(ours.affine - grey_nifti.affine).max() < 1e-6


def test_ybr_multiframe_is_rgb_voxels_equal_to_pydicom(tmp_path):
    source = CORPUS / "transfer-syntax/explicit-vr-le/examples_ybr_color.dcm"  # 30 JPEG frames
    (vol,) = volumes(catalog_table([source]))
    img = nib.load(vol.to_nifti(tmp_path / "us.nii.gz"))
    assert img.header["datatype"] == 128 and img.shape == (320, 240, 30)
    assert img.header["sform_code"] == 0  # no patient geometry in the object
    data = np.asarray(img.dataobj)
    rgb = np.stack([data["R"], data["G"], data["B"]], axis=-1)[:, ::-1].transpose(2, 1, 0, 3)
    assert np.array_equal(rgb, pydicom.dcmread(source).pixel_array)  # YBR_FULL_422 -> RGB


def test_colour_nifti_cannot_hold_is_refused_before_writing(tmp_path):
    wide = CORPUS / "transfer-syntax/rle/SC_rgb_rle_16bit.dcm"
    (vol,) = volumes(catalog_table([wide]))
    with pytest.raises(ConfigError, match="RGB24 .3 samples of 8 bits.*uint16.*Zarr"):
        vol.to_nifti(tmp_path / "wide.nii")
    ybr = CORPUS / "transfer-syntax/explicit-vr-le/examples_ybr_color.dcm"
    (kept,) = volumes(catalog_table([ybr]), options=PixelOptions(as_rgb=False))
    with pytest.raises(ConfigError, match="kept as YBR"):
        kept.to_nifti(tmp_path / "ybr.nii")
    assert not list(tmp_path.iterdir())  # refused before any file was created
