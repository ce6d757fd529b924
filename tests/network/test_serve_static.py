"""``dicomflow export SRC DST --format dicomweb``: the static DICOMweb tree, checked against the
server's answers and pydicom's stored frames, in a folder and in a bucket (moto's S3 server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.encaps import generate_frames

import dicomflow as dfl
from dicomflow.network import export_dicomweb, load_index

from .conftest import copy_corpus, free_port

CORPUS_FILES = (
    "series/dcm_qa_ct_ge",
    "encapsulation/IM00001.fragmented_no_bot_jpeg_baseline.50.dcm",
    "charsets/chrRuss.dcm",
)


@pytest.fixture(scope="module")
def archive(corpus: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("static")
    copy_corpus(corpus, CORPUS_FILES, root / "files")
    dfl.scan(root / "files").to_parquet(root / "catalog.parquet")
    return root


def _stored_frames(path: str) -> list[bytes]:
    ds = dcmread(path)
    n = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        return list(generate_frames(ds.PixelData, number_of_frames=n))
    size = ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8
    return [ds.PixelData[i * size : (i + 1) * size] for i in range(n)]


def test_the_tree_holds_what_a_viewer_fetches(archive: Path, tmp_path: Path) -> None:
    index = load_index(archive / "catalog.parquet")
    out = tmp_path / "web"
    counts = export_dicomweb(index, str(out), base_url="https://bucket.example/web")
    rows = list(index.instances.iter_rows(named=True))
    assert counts["instances"] == len(rows) and counts["frames_refused"] == 0
    studies = json.loads((out / "studies" / "index.json").read_text())
    assert {s["0020000D"]["Value"][0] for s in studies} == {r["StudyInstanceUID"] for r in rows}
    frames = 0
    for row in rows:
        study, series, sop = (
            row["StudyInstanceUID"],
            row["SeriesInstanceUID"],
            row["SOPInstanceUID"],
        )
        here = out / "studies" / study / "series" / series / "instances" / sop
        assert (here / "instance.dcm").read_bytes() == Path(row["uri"]).read_bytes()
        meta = json.loads((here / "metadata").read_text())
        assert meta[0]["00080018"]["Value"] == [sop]
        expected = _stored_frames(row["uri"])
        for n, data in enumerate(expected, start=1):
            assert (here / "frames" / str(n)).read_bytes() == data
        assert not (here / "frames" / str(len(expected) + 1)).exists()
        frames += len(expected)
        listed = json.loads((here.parent / "index.json").read_text())
        assert sop in {i["00080018"]["Value"][0] for i in listed}
    assert counts["frames"] == frames
    manifest = json.loads((out / "ohif.json").read_text())
    assert len(manifest["studies"]) == len(studies)
    ohif_instances = [i for s in manifest["studies"] for se in s["series"] for i in se["instances"]]
    assert len(ohif_instances) == len(rows)
    first = ohif_instances[0]
    assert first["url"].startswith("dicomweb:https://bucket.example/web/studies/")
    local = out / first["url"].removeprefix("dicomweb:https://bucket.example/web/")
    assert dcmread(local).SOPInstanceUID == first["metadata"]["SOPInstanceUID"]
    assert all("SeriesInstanceUID" in se for s in manifest["studies"] for se in s["series"])


def test_the_command_writes_to_a_bucket(archive: Path) -> None:
    import s3fs
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"key": "testing", "secret": "testing", "endpoint_url": endpoint}
        fs = s3fs.S3FileSystem(**creds)
        fs.mkdir("viewer")
        result = subprocess.run(
            [sys.executable, "-m", "dicomflow.cli", "export", str(archive / "catalog.parquet"),
             "s3://viewer/web", "--format", "dicomweb", "--storage-option", "key=testing",
             "--storage-option", "secret=testing", "--storage-option",
             f"endpoint_url={endpoint}"],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "AWS_DEFAULT_REGION": "us-east-1"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        studies = json.loads(fs.cat_file("viewer/web/studies/index.json"))
        index = load_index(archive / "catalog.parquet")
        assert len(studies) == index.studies.height
        row = index.instances.row(0, named=True)
        key = (f"viewer/web/studies/{row['StudyInstanceUID']}/series/{row['SeriesInstanceUID']}"
               f"/instances/{row['SOPInstanceUID']}/frames/1")  # fmt: skip
        assert fs.cat_file(key) == _stored_frames(row["uri"])[0]
        assert fs.exists("viewer/web/ohif.json")
    finally:
        server.stop()
