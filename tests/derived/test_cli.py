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
