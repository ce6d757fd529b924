"""SEG and measurements read their sources through fsspec, each object once.

A series on an fsspec URL (``memory://``) and a multi-frame source (the synthetic series
converted to one Legacy Converted Enhanced CT object by highdicom).
"""

from __future__ import annotations

import uuid

import fsspec
import highdicom as hd
import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest

import dicomflow as dfl
from dicomflow.cli import main

from .conftest import CORPUS, write_ct_series


def _labels(shape) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint8)
    lab[1:3, 2:6, 4:9] = 1
    lab[4, 10:12, 1:3] = 2
    return lab


@pytest.fixture
def memory_folder():
    root = f"memory://derived-{uuid.uuid4().hex[:8]}"
    fs = fsspec.filesystem("memory")
    yield root, fs
    fs.rm(root.removeprefix("memory://"), recursive=True)


def test_seg_of_a_series_on_an_fsspec_url(tmp_path, memory_folder):
    root, fs = memory_folder
    for path in write_ct_series(tmp_path / "ct"):
        fs.put_file(str(path), f"{root}/ct/{path.name}")
    (vol,) = dfl.volumes(dfl.scan(f"{root}/ct/", workers=1))
    assert vol.planes[0].ref.uri.startswith("memory://")
    lab = _labels(vol.shape)
    dfl.write_seg(lab, vol, tmp_path / "seg.dcm")
    local = dfl.volumes(dfl.scan(str(tmp_path / "ct"), workers=1))[0]
    got = dfl.read_seg(tmp_path / "seg.dcm", local)
    np.testing.assert_array_equal(got.labels, lab)
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    instances = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    referenced = {r.ReferencedSOPInstanceUID for r in instances}
    assert referenced == set(vol.sop_instance_uids)


def _multiframe(tmp_path):
    paths = write_ct_series(tmp_path / "single")
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(p) for p in paths],
        series_instance_uid=hd.UID(),
        series_number=2,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )
    (tmp_path / "multi").mkdir()
    image.save_as(tmp_path / "multi" / "ct.dcm")
    return tmp_path / "multi" / "ct.dcm"


def test_seg_of_a_multiframe_source_references_its_frames(tmp_path):
    source = _multiframe(tmp_path)
    (vol,) = dfl.volumes(dfl.scan(str(source), workers=1))
    frames = [p.ref.index for p in vol.planes]
    assert sorted(frames) == list(range(6))
    lab = _labels(vol.shape)
    dfl.write_seg(lab, vol, tmp_path / "seg.dcm")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    # highdicom's own reading, frame by frame of the source, in the volume's slice order
    by_frame = seg.get_pixels_by_source_frame(
        str(pydicom.dcmread(source, stop_before_pixels=True).SOPInstanceUID),
        [k + 1 for k in frames],
        combine_segments=True,
    )
    np.testing.assert_array_equal(by_frame, lab)
    got = dfl.read_seg(tmp_path / "seg.dcm", vol)
    np.testing.assert_array_equal(got.labels, lab)
    assert got.warnings == ()


def test_seg_of_a_source_highdicom_refuses_is_a_clear_error(tmp_path):
    # the Philips enhanced MR keeps Pixel Measures per frame, which highdicom does not take
    files = sorted((CORPUS / "multiframe" / "enhanced-mr-philips").glob("*.dcm"))
    vol = dfl.volumes(dfl.scan([str(p) for p in files], workers=1))[0]
    with pytest.raises(dfl.DerivedObjectError, match="cannot write a SEG on this series"):
        dfl.write_seg(_labels(vol.shape), vol, tmp_path / "seg.dcm")
    assert not list(tmp_path.iterdir())


def test_measurements_command_reads_an_fsspec_url(tmp_path, memory_folder, capsys):
    root, fs = memory_folder
    names = ("highdicom_sr_document.dcm", "highdicom_sr_document_with_multiple_groups.dcm")
    for name in names:
        fs.put_file(str(CORPUS / "modality" / "SR" / name), f"{root}/sr/{name}")
    out = tmp_path / "m.parquet"
    rc = main(["measurements", f"{root}/sr/", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    expected = 0
    for name in names:  # counted by highdicom on the local files
        content = hd.sr.srread(CORPUS / "modality" / "SR" / name).content
        for get in (
            content.get_image_measurement_groups,
            content.get_planar_roi_measurement_groups,
            content.get_volumetric_roi_measurement_groups,
        ):
            expected += sum(len(g.get_measurements()) for g in get())
    assert pq.read_table(out).num_rows == expected == 5


def test_seg_command_on_a_series_at_an_fsspec_url(tmp_path, memory_folder, capsys):
    import nibabel as nib

    root, fs = memory_folder
    for path in write_ct_series(tmp_path / "ct"):
        fs.put_file(str(path), f"{root}/ct/{path.name}")
    (vol,) = dfl.volumes(dfl.scan(str(tmp_path / "ct"), workers=1))
    lab = _labels(vol.shape)
    nib.save(
        nib.Nifti1Image(np.transpose(lab[:, ::-1, :], (2, 1, 0)), vol.nifti_affine),
        tmp_path / "l.nii.gz",
    )
    out = tmp_path / "seg.dcm"
    rc = main(["seg", str(tmp_path / "l.nii.gz"), "--series", f"{root}/ct/", "-o", str(out),
               "--storage-option", "skip_instance_cache=true"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    np.testing.assert_array_equal(dfl.read_seg(out, vol).labels, lab)
