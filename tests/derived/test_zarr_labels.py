"""OME-Zarr label images of a SEG and an RTSTRUCT inside the series' OME-Zarr group.

Checked against the OME-NGFF labels layout (a ``labels`` group listing its label images; each
a multiscale image of integers with ``image-label``: ``colors`` of ``label-value`` and
``rgba``, ``properties``, ``source``) and, voxel by voxel, against highdicom's reading of the
SEG on the series' source instances.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import zarr

import dicomflow as dfl
from dicomflow.cli import main

from .conftest import write_ct_series
from .test_rtstruct import _rtstruct


def _labels(shape) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint8)
    lab[2:4, 3:9, 5:12] = 1
    lab[4, 10:14, 1:6] = 2
    return lab


def _ome(node) -> dict:
    return dict(node.attrs["ome"])


@pytest.fixture
def exported(tmp_path, capsys):
    src = tmp_path / "src"
    paths = write_ct_series(src)
    (vol,) = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1))
    lab = _labels(vol.shape)
    dfl.write_seg(lab, vol, src / "seg.dcm", segments={1: "liver", 2: "lesion"})
    seg = pydicom.dcmread(src / "seg.dcm")
    red = hd.color.CIELabColor.from_rgb(255, 0, 0)
    seg.SegmentSequence[0].RecommendedDisplayCIELabValue = list(red.value)  # liver: red
    seg.save_as(src / "seg.dcm")
    _rtstruct(src / "rtss.dcm", vol, pydicom.uid.generate_uid(), pydicom.uid.generate_uid())
    rtss = pydicom.dcmread(src / "rtss.dcm")
    rtss.ROIContourSequence[0].ROIDisplayColor = [10, 200, 30]  # ROI 1 ("body")
    rtss.save_as(src / "rtss.dcm")
    out = tmp_path / "out"
    rc = main(["export", str(src), str(out), "--format", "zarr"])
    err = capsys.readouterr().err
    assert rc == 0, err
    uid = vol.info["SeriesInstanceUID"]
    (image,) = [
        p
        for p in out.glob("*.zarr")
        if zarr.open_group(str(p), mode="r").attrs["dicomflow"]["series_instance_uid"] == uid
    ]
    return vol, lab, src, zarr.open_group(str(image), mode="r")


def test_export_zarr_writes_ngff_label_images_in_the_series_group(exported):
    vol, lab, src, image = exported
    listed = _ome(image["labels"])["labels"]
    assert sorted(n.split("-")[0] for n in listed) == ["rtstruct", "seg"]
    assert _ome(image["labels"])["version"] == _ome(image)["version"] == "0.5"
    seg_name = next(n for n in listed if n.startswith("seg-"))
    node = image["labels"][seg_name]
    meta = _ome(node)
    # the same axes and the same scale per level as the image
    assert meta["multiscales"][0]["axes"] == _ome(image)["multiscales"][0]["axes"]
    assert [d["coordinateTransformations"] for d in meta["multiscales"][0]["datasets"]] == [
        d["coordinateTransformations"] for d in _ome(image)["multiscales"][0]["datasets"]
    ]
    label = meta["image-label"]
    assert label["source"] == {"image": "../../"}
    assert [c["label-value"] for c in label["colors"]] == [1, 2]
    for color in label["colors"]:
        assert len(color["rgba"]) == 4 and all(0 <= v <= 255 for v in color["rgba"])
    assert label["colors"][0]["rgba"] == [255, 0, 0, 255]  # the SEG's recommended colour
    names = {p["label-value"]: p["SegmentLabel"] for p in label["properties"]}
    assert names == {1: "liver", 2: "lesion"}
    assert {p["TypeCode"] for p in label["properties"]} == {"SCT:85756007"}
    data = node[meta["multiscales"][0]["datasets"][0]["path"]][...]
    assert np.issubdtype(data.dtype, np.integer)
    assert data.shape == image["0"].shape == lab.shape
    # highdicom's own reading of the SEG, on the series' instances in the volume's order
    truth = hd.seg.segread(src / "seg.dcm").get_pixels_by_source_instance(
        vol.sop_instance_uids, combine_segments=True
    )
    np.testing.assert_array_equal(data, truth)
    np.testing.assert_array_equal(data, lab)


def test_the_rtstruct_label_image_holds_its_rasterised_rois(exported):
    _, _, _, image = exported
    name = next(n for n in _ome(image["labels"])["labels"] if n.startswith("rtstruct-"))
    node = image["labels"][name]
    data = node["0"][...]
    assert int((data == 1).sum()) == 2 * 72 - 6  # the ROI with a hole of test_rtstruct
    label = _ome(node)["image-label"]
    colors = {c["label-value"]: c["rgba"] for c in label["colors"]}
    assert colors[1] == [10, 200, 30, 255]
    assert {p["label-value"]: p["ROIName"] for p in label["properties"]}[1] == "body"


def test_label_levels_follow_the_image_levels(tmp_path):
    paths = write_ct_series(tmp_path / "ct")
    (vol,) = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1))
    lab = _labels(vol.shape)
    dfl.write_seg(lab, vol, tmp_path / "seg.dcm")
    group = vol.to_zarr(tmp_path / "ct.zarr", levels=2)
    dfl.read_seg(tmp_path / "seg.dcm", vol).to_zarr(group, "seg")
    image = zarr.open_group(group, mode="r")
    small = image["labels"]["seg"]["1"][...]
    assert small.shape == image["1"].shape == (6, 10, 12)
    for z, i, j in np.ndindex(small.shape):  # each voxel is a label of the block it stands for
        assert small[z, i, j] in lab[z, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
    assert set(np.unique(small)) == {0, 1, 2}


def test_labels_on_another_grid_are_refused(tmp_path):
    paths = write_ct_series(tmp_path / "ct")
    (vol,) = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1))
    dfl.write_seg(_labels(vol.shape), vol, tmp_path / "seg.dcm")
    got = dfl.read_seg(tmp_path / "seg.dcm", vol)
    other = write_ct_series(tmp_path / "other", orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    (elsewhere,) = dfl.volumes(dfl.scan([str(p) for p in other], workers=1))
    group = elsewhere.to_zarr(tmp_path / "other.zarr")
    with pytest.raises(dfl.DerivedObjectError, match="not on this image's grid"):
        got.to_zarr(group, "seg")
    assert "labels" not in zarr.open_group(group, mode="r")


def test_export_zarr_labels_of_a_source_on_an_fsspec_url(tmp_path, capsys):
    import uuid

    import fsspec

    paths = write_ct_series(tmp_path / "ct")
    (vol,) = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1))
    lab = _labels(vol.shape)
    dfl.write_seg(lab, vol, tmp_path / "ct" / "seg.dcm")
    fs = fsspec.filesystem("memory")
    root = f"memory://labels-{uuid.uuid4().hex[:8]}"
    try:
        for path in (tmp_path / "ct").iterdir():
            fs.put_file(str(path), f"{root}/{path.name}")
        rc = main(["export", f"{root}/", str(tmp_path / "out"), "--format", "zarr"])
        assert rc == 0, capsys.readouterr().err
    finally:
        fs.rm(root.removeprefix("memory://"), recursive=True)
    (image,) = [p for p in (tmp_path / "out").glob("*_CT.zarr")]
    np.testing.assert_array_equal(zarr.open_group(str(image), mode="r")["labels/seg-1/0"][...], lab)
