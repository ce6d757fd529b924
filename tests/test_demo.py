"""``dicomflow demo`` (the README's first command) runs the whole flow and says where it went."""

from __future__ import annotations

import re

import nibabel as nib
import pyarrow.parquet as pq
import pydicom

from dicomflow.cli import main


def test_demo_runs_the_whole_flow(tmp_path, capsys) -> None:
    dest = tmp_path / "demo"
    assert main(["demo", str(dest), "--workers", "1"]) == 0
    err = capsys.readouterr().err
    for where in ("catalog.parquet", "share", "share.manifests", "volumes", "report.html"):
        assert str(dest / where) in err, where
    # the catalog holds every file of the sample, the broken ones as error rows
    catalog = pq.read_table(dest / "catalog.parquet")
    errors = catalog.column("error").drop_null().to_pylist()
    assert catalog.num_rows == 132 and len(errors) == 3
    # the share is a media set whose files hold none of the sample's planted names
    dicomdir = pydicom.dcmread(dest / "share" / "DICOMDIR")
    assert len(dicomdir.DirectoryRecordSequence) > 129
    good = catalog.filter(catalog.column("error").is_null())
    originals = {str(n) for n in good.column("PatientName").to_pylist()}
    assert len(originals) == 4
    shared = [pydicom.dcmread(p, stop_before_pixels=True) for p in (dest / "share").rglob("*")
              if p.is_file() and p.name != "DICOMDIR"]  # fmt: skip
    assert len(shared) == 129 and not {str(d.PatientName) for d in shared} & set(
        map(str, originals)
    )
    # volumes: a NIfTI and a montage each, shown in the report
    niftis = sorted((dest / "volumes").glob("*.nii.gz"))
    assert niftis and all(nib.load(p).get_fdata().ndim >= 3 for p in niftis)
    page = (dest / "report.html").read_text()
    shown = set(re.findall(r"src='volumes/([^']+\.png)'", page))
    assert shown == {p.name for p in (dest / "volumes").glob("*.png")} and len(shown) == len(niftis)
    assert "no identifying value left" in page
    # a rerun into the same folder resumes (nothing de-identified twice) and still passes
    assert main(["demo", str(dest), "--workers", "1"]) == 0
    assert "129 done (129 from earlier runs)" in capsys.readouterr().err
