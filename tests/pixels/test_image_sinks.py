"""PNG and NIfTI sinks in pipelines: real files end to end, a corrupt frame is a failed row."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import CORPUS, catalog_row
from PIL import Image

import dicomflow as dfl
from dicomflow.cli import main
from dicomflow.pixels import apply_window, locate_frames

CT = CORPUS / "transfer-syntax/explicit-vr-le/CT_small.dcm"  # grey, geometry, rescaled
RGB = CORPUS / "transfer-syntax/rle/SC_rgb_rle_2frame.dcm"  # RGB, 2 frames, RLE
YBR = CORPUS / "encapsulation/IM00001.fragmented_no_bot_jpeg_baseline.50.dcm"  # US, 8 frames
ENHANCED = CORPUS / "multiframe/enhanced-mr-philips/IM_0027_fMAP.dcm"  # 64 frames, 2 stacks
WINDOW = (40.0, 400.0)


def _corrupt(name: str, folder: Path) -> Path:
    """A copy of a 2-frame encapsulated CT whose frame 1 lost the first 64 bytes of its data."""
    broken = folder / f"corrupt-{name}"
    shutil.copy(CORPUS / "encapsulation" / name, broken)
    offsets = locate_frames([catalog_row(broken)])["frame_offsets"][0].as_py()
    data = bytearray(broken.read_bytes())
    start = offsets[1] + 8  # the first fragment of frame 1, after its item header
    data[start : start + 64] = b"\x00" * 64
    broken.write_bytes(bytes(data))
    return broken


def _rows(report) -> dict[str, dict]:
    return {Path(r["source_uri"]).name: r for r in report.manifest.to_pylist()}


def _pixels(path: Path) -> np.ndarray:
    """pydicom's pixel_array, always with a frame axis."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    return arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]


def _assert_failed_on_frame(row: dict, sink: str, broken: Path) -> None:
    assert row["status"] == "failed" and row["stage"] == sink
    assert row["reason"].startswith("FrameDecodeError: ")
    assert f"{broken}: frame 1:" in row["reason"]  # the file and the frame
    assert row["outputs"] == []  # nothing of it was written


def test_png_sink_writes_pydicom_values_and_fails_the_corrupt_frame(tmp_path):
    broken = _corrupt("CT0012.not_fragmented_bot_jpeg_ls.80.dcm", tmp_path)
    sources = [CT, RGB, YBR, broken]
    out = tmp_path / "png"
    report = (
        dfl.pipeline(dfl.scan([str(p) for p in sources], workers=1))
        .write(dfl.writers.PngFolder(str(out), window=WINDOW, frames="all"))
        .execute(workers=1)
    )
    assert report.manifest.num_rows == len(sources)  # every input is one row
    rows = _rows(report)
    assert (report.done, report.failed) == (3, 1)
    _assert_failed_on_frame(rows[broken.name], "png", broken)
    # grey: the Modality LUT, then the window, of pydicom's values
    (png,) = rows[CT.name]["outputs"]
    assert png["path"].startswith(str(out / "1CT1")) and png["path"].endswith(".png")
    ds = pydicom.dcmread(CT)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    image = np.asarray(Image.open(png["path"]))
    assert image.shape == (128, 128) and image.dtype == np.uint8
    assert np.array_equal(image, apply_window(hu, *WINDOW))
    # colour, one PNG per frame (index before .png): exactly pydicom's RGB (YBR converted)
    for source, frames in ((RGB, 2), (YBR, 8)):
        outputs = rows[source.name]["outputs"]
        expected = _pixels(source)
        assert len(outputs) == frames == len(expected)
        for k, output in enumerate(sorted(outputs, key=lambda o: o["path"])):
            assert output["path"].endswith(f"_{k:04d}.png")
            image = np.asarray(Image.open(output["path"]))
            assert image.shape == expected[k].shape and np.array_equal(image, expected[k])
    written = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(written) == 1 + 2 + 8  # and no temporaries left behind


def test_nifti_sink_writes_volumes_and_fails_the_corrupt_frame(tmp_path):
    broken = _corrupt("CT0012.not_fragmented_bot_rle.dcm", tmp_path)
    sources = [CT, RGB, ENHANCED, broken]
    out = tmp_path / "nifti"
    sink = dfl.writers.NiftiFolder(str(out), template="{Modality}/{SOPInstanceUID}.nii")
    report = (
        dfl.pipeline(dfl.scan([str(p) for p in sources], workers=1)).write(sink).execute(workers=1)
    )
    assert report.manifest.num_rows == len(sources)
    rows = _rows(report)
    assert (report.done, report.failed) == (3, 1)
    _assert_failed_on_frame(rows[broken.name], "nifti", broken)

    # one grey frame: one slice, stored values with the rescale in scl_*, rows flipped
    nii, sidecar = (o["path"] for o in rows[CT.name]["outputs"])
    assert nii.endswith(".nii") and sidecar.endswith(".json") and "/CT/" in nii
    img = nib.load(nii)
    ds = pydicom.dcmread(CT)
    assert img.shape == (128, 128, 1)
    assert np.array_equal(np.asarray(img.dataobj.get_unscaled())[:, ::-1, 0].T, ds.pixel_array)
    assert (img.dataobj.slope, img.dataobj.inter) == (1.0, -1024.0)  # Rescale Slope/Intercept
    # geometry: voxel (column 0, row 0) -- NIfTI y = rows - 1 -- is Image Position, in RAS
    corner = img.affine @ [0, 127, 0, 1]
    assert np.abs(corner[:3] - np.array(ds.ImagePositionPatient) * [-1, -1, 1]).max() < 1e-3
    assert img.header["sform_code"] == 1

    # colour multi-frame: RGB24 voxels, the frames along z
    (nii, _) = (o["path"] for o in rows[RGB.name]["outputs"])
    img = nib.load(nii)
    assert img.header["datatype"] == 128 and img.shape == (100, 100, 2)
    data = np.asarray(img.dataobj)
    rgb = np.stack([data["R"], data["G"], data["B"]], axis=-1)[:, ::-1].transpose(2, 1, 0, 3)
    assert np.array_equal(rgb, _pixels(RGB))

    # enhanced multi-frame: its two stacks, each as dcm2niix writes it (the corpus references)
    outputs = [o["path"] for o in rows[ENHANCED.name]["outputs"] if o["path"].endswith(".nii")]
    assert [Path(p).name[-6:] for p in outputs] == ["_0.nii", "_1.nii"]
    references = ["Philips_WIP_B0_NS_801_e1.nii", "Philips_WIP_B0_NS_801_e2_fieldmaphz.nii"]
    for path, name in zip(outputs, references, strict=True):
        ours, ref = nib.load(path), nib.load(ENHANCED.parent / "reference" / name)
        a, b = ours.dataobj.get_unscaled(), ref.dataobj.get_unscaled()
        assert a.shape == b.shape and np.array_equal(a, b)
        assert np.abs(ours.affine - ref.affine).max() < 1e-3


def test_outputs_are_the_same_bytes_in_process_and_in_a_process_pool(tmp_path):
    trees = []
    for workers in (1, 2):
        out = tmp_path / f"workers-{workers}"
        dfl.pipeline(dfl.scan([str(CT), str(RGB)], workers=1)).write(
            dfl.writers.PngFolder(str(out / "png"), frames="all"),
            dfl.writers.NiftiFolder(str(out / "nii")),
        ).execute(workers=workers, batch_size=1)
        files = [p for p in sorted(out.rglob("*")) if p.is_file() and ".manifests" not in str(p)]
        trees.append(
            {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).digest() for p in files}
        )
    assert len(trees[0]) == 3 + 2 * 2 and trees[0] == trees[1]  # .nii.gz: no name, no time


def blank_corner(instance: dfl.Instance) -> dfl.Instance:
    """A stage that changes pixels and identity, as a de-identification would."""
    ds = instance.dataset
    pixels = ds.pixel_array.copy()
    pixels[:32, :32] = pixels.min()
    ds.PixelData = pixels.tobytes()
    ds.PatientID = "ANON"
    return instance


def test_sinks_write_the_pixels_the_stages_left(tmp_path):
    out = tmp_path / "out"
    report = (
        (dfl.pipeline(dfl.scan(str(CT), workers=1)) | dfl.map(blank_corner))
        .write(
            dfl.writers.PngFolder(str(out / "png"), window=WINDOW),
            dfl.writers.NiftiFolder(str(out / "nii"), sidecar=False),
        )
        .execute(workers=1)
    )
    rows = _rows(report)
    png, nii = (o["path"] for o in rows[CT.name]["outputs"])
    assert f"{out}/png/ANON/" in png and f"{out}/nii/ANON/" in nii  # the stage's values
    ds = pydicom.dcmread(CT)
    expected = ds.pixel_array.copy()
    expected[:32, :32] = expected.min()
    assert np.array_equal(np.asarray(Image.open(png)), apply_window(expected - 1024.0, *WINDOW))
    assert np.array_equal(nib.load(nii).dataobj.get_unscaled()[:, ::-1, 0].T, expected)
    assert not list(tmp_path.rglob("*1CT1*"))  # the original identity is nowhere


def keep_dataset(instance: dfl.Instance) -> dfl.Instance:
    instance.dataset.ImageComments = "parsed by a stage"
    return instance


def test_a_parsed_corrupt_instance_is_reported_under_its_source(tmp_path):
    broken = _corrupt("CT0012.not_fragmented_bot_jpeg_ls.80.dcm", tmp_path)
    report = (
        (dfl.pipeline(dfl.scan(str(broken), workers=1)) | dfl.map(keep_dataset))
        .write(dfl.writers.NiftiFolder(str(tmp_path / "nii")))
        .execute(workers=1)
    )
    (row,) = report.manifest.to_pylist()
    _assert_failed_on_frame(row, "nifti", broken)  # not the in-memory copy it was decoded from
    assert "as the pipeline's stages left it" in row["reason"]


def test_pixel_sinks_from_a_pipeline_file(tmp_path, capsys):
    broken = _corrupt("CT0012.not_fragmented_bot_jpeg_ls.80.dcm", tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    for path in (CT, RGB, broken):
        shutil.copy(path, src / path.name)
    sr = CORPUS / "modality/SR/test-SR.dcm"  # no pixels: skipped, not failed
    shutil.copy(sr, src / sr.name)
    toml = tmp_path / "images.toml"
    toml.write_text(
        f'[source]\nscan = "{src}"\n\n'
        f'[[sinks]]\ntype = "png"\nroot = "{tmp_path / "png"}"\nwindow = [40, 400]\n'
        'frames = "middle"\ntemplate = "{PatientID}/{SeriesNumber}-{SOPInstanceUID}.png"\n\n'
        f'[[sinks]]\ntype = "nifti"\nroot = "{tmp_path / "nii"}"\n'
    )
    pipeline = dfl.Pipeline.from_file(toml)
    png, nii = pipeline.sinks
    assert isinstance(png, dfl.writers.PngFolder) and png.window == WINDOW
    assert isinstance(nii, dfl.writers.NiftiFolder)
    assert pipeline.config()["sinks"][0] == {
        "type": "png",
        "root": str(tmp_path / "png"),
        "template": "{PatientID}/{SeriesNumber}-{SOPInstanceUID}.png",
        "window": [40.0, 400.0],
        "frames": "middle",
    }
    assert main(["run", str(toml), "--workers", "1", "-q"]) == 1  # one input failed
    err = capsys.readouterr().err
    assert "2 done" in err and "1 skipped" in err and "1 failed" in err
    assert f"failed {src / broken.name}: [png] FrameDecodeError" in err
    # one PNG per instance (the middle frame of the 2-frame RGB object), one NIfTI + sidecar
    pngs = sorted(p.name for p in (tmp_path / "png").rglob("*.png"))
    assert len(pngs) == 2 and all("-" in name for name in pngs)
    middle = [p for p in (tmp_path / "png").rglob("*.png") if "ID1" in str(p)]
    assert np.array_equal(np.asarray(Image.open(middle[0])), _pixels(RGB)[1])
    assert len(list((tmp_path / "nii").rglob("*.nii.gz"))) == 2
    # rerun: everything done is resumed, the same files, nothing rewritten
    assert main(["run", str(toml), "--workers", "1", "-q"]) == 1  # the broken one fails again
    assert "2 done (2 from earlier runs)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("sink", "config", "message"),
    [
        (dfl.writers.PngFolder, {"template": "{SOPInstanceUID}.jpg"}, "must end with .png"),
        (dfl.writers.PngFolder, {"template": "all.png"}, "no {Keyword} fields"),
        (dfl.writers.PngFolder, {"window": "sunset"}, "unknown window preset"),
        (dfl.writers.PngFolder, {"frames": "some"}, "expected 'middle' or 'all'"),
        (dfl.writers.NiftiFolder, {"template": "{SOPInstanceUID}.nrrd"}, "must end with .nii"),
    ],
)
def test_bad_sink_options_are_clear_errors(sink, config, message, tmp_path):
    with pytest.raises(dfl.ConfigError, match=message):
        sink(str(tmp_path), **config)
