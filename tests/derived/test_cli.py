"""``dicomflow measurements`` and ``dicomflow seg`` end to end."""

from __future__ import annotations

import highdicom as hd
import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pydicom

import dicomflow as dfl
from dicomflow.cli import main

from .conftest import CORPUS


def test_measurements_command_on_the_corpus_sr_folder(tmp_path, capsys) -> None:
    out, evals = tmp_path / "m.parquet", tmp_path / "e.parquet"
    src = str(CORPUS / "modality" / "SR")
    rc = main(["measurements", src, "-o", str(out), "--evaluations", str(evals)])
    assert rc == 0, capsys.readouterr().err
    table = pq.read_table(out)
    # the two highdicom TID 1500 documents: 1 + 4 numeric measurements (counted by highdicom)
    expected = 0
    for name in ("highdicom_sr_document.dcm", "highdicom_sr_document_with_multiple_groups.dcm"):
        content = hd.sr.srread(CORPUS / "modality" / "SR" / name).content
        for get in (
            content.get_image_measurement_groups,
            content.get_planar_roi_measurement_groups,
            content.get_volumetric_roi_measurement_groups,
        ):
            expected += sum(len(g.get_measurements()) for g in get())
    assert table.num_rows == expected == 5
    assert pq.read_table(evals).num_rows > 0


def test_seg_command_from_nifti(ct_series, tmp_path, capsys) -> None:
    paths, vol = ct_series
    lab = np.zeros(vol.shape, dtype=np.uint8)
    lab[1:3, 2:6, 4:9] = 2
    lab[4, 10:12, 1:3] = 5
    nib.save(
        nib.Nifti1Image(np.transpose(lab[:, ::-1, :], (2, 1, 0)), vol.nifti_affine),
        tmp_path / "l.nii.gz",
    )
    out = tmp_path / "seg.dcm"
    series = str(paths[0].parent)
    rc = main(["seg", str(tmp_path / "l.nii.gz"), "--series", series, "-o", str(out),
               "--label", "2=kidney"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    ds = pydicom.dcmread(out)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["kidney", "Segment 5"]
    got = dfl.read_seg(out, vol)
    # segments are numbered 1..n in label order: 2 -> 1, 5 -> 2
    np.testing.assert_array_equal(got.labels, np.select([lab == 2, lab == 5], [1, 2], 0))


def test_export_nifti_writes_label_maps_beside_the_series(tmp_path, capsys) -> None:
    from .conftest import write_ct_series
    from .test_rtstruct import _rtstruct

    src = tmp_path / "src"
    paths = write_ct_series(src)
    vol = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1))[0]
    lab = np.zeros(vol.shape, dtype=np.uint8)
    lab[2:4, 3:9, 5:12] = 1
    dfl.write_seg(lab, vol, src / "seg.dcm", segments={1: "organ"})
    _rtstruct(src / "rtss.dcm", vol, pydicom.uid.generate_uid(), pydicom.uid.generate_uid())
    out = tmp_path / "out"
    main(["export", str(src), str(out), "--format", "nifti"])
    err = capsys.readouterr().err
    series = [
        p for p in out.glob("*.nii.gz") if "_seg-" not in p.name and "_rtstruct-" not in p.name
    ]
    seg_maps = sorted(out.glob("*_seg-*.nii.gz"))
    rt_maps = sorted(out.glob("*_rtstruct-*.nii.gz"))
    assert len(seg_maps) == 1 and len(rt_maps) == 1, err
    ct = next(p for p in series if seg_maps[0].name.startswith(p.name.split(".nii")[0]))
    image, labels = nib.load(ct), nib.load(seg_maps[0])
    assert labels.shape == image.shape
    np.testing.assert_allclose(labels.affine, image.affine, atol=1e-4)
    # the NIfTI layout by hand: x = column, y = flipped row, z = slice
    np.testing.assert_array_equal(
        np.asarray(labels.dataobj), np.transpose(lab[:, ::-1, :], (2, 1, 0))
    )
    lut = seg_maps[0].with_name(seg_maps[0].name.replace(".nii.gz", ".tsv")).read_text()
    assert lut.splitlines() == ["number\tname", "1\torgan"]
    rt = np.asarray(nib.load(rt_maps[0]).dataobj)
    assert int((rt == 1).sum()) == 2 * 72 - 6  # the ROI with a hole of test_rtstruct


def test_export_label_map_follows_a_reoriented_sagittal_mr_series(tmp_path, capsys) -> None:
    from .conftest import write_ct_series

    src = tmp_path / "src"
    paths = write_ct_series(src, modality="MR", orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    vol = dfl.volumes(dfl.scan([str(p) for p in paths], workers=1))[0]
    lab = np.zeros(vol.shape, dtype=np.uint8)
    lab[1:3, 2:7, 3:11] = 1
    lab[4, 15:18, 0:2] = 1
    dfl.write_seg(lab, vol, src / "seg.dcm")
    out = tmp_path / "out"
    main(["export", str(src), str(out), "--format", "nifti", "--reorient", "yes"])
    err = capsys.readouterr().err
    seg_map = next(iter(out.glob("*_seg-*.nii.gz")), None)
    assert seg_map is not None, err
    series = out / (seg_map.name.split("_seg-")[0] + ".nii.gz")
    image, labels = nib.load(series), nib.load(seg_map)
    assert not np.allclose(image.affine, vol.nifti_affine)  # the sagittal series was reoriented
    np.testing.assert_allclose(labels.affine, image.affine, atol=1e-4)
    # every labelled NIfTI voxel, mapped to patient space (RAS -> LPS) and back onto the DICOM
    # grid with the volume's own affine, is a labelled voxel of the array; and as many
    ijk = np.argwhere(np.asarray(labels.dataobj) == 1)
    ras = labels.affine @ np.column_stack([ijk, np.ones(len(ijk))]).T
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ras
    col, row, sl, _ = np.rint(np.linalg.inv(vol.affine) @ lps).astype(int)
    assert len(ijk) == int(lab.sum())
    assert (lab[sl, row, col] == 1).all()
