"""A lake on a URL (S3, on the moto server) spools a large received instance to a local file and
uploads it in pieces, as a local lake spools it: the receiver's memory does not grow with the
instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from .conftest import PEER_ENV, free_port, rss_growth, tree_rss, wait_until
from .test_attacks import _listening

#: Pixel bytes of the large instance: far above the spool's 4 MiB and the upload's pieces.
LARGE = 320 * 2**20


def _large_ct(path: Path) -> int:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = "LARGE", "CT"
    ds.Rows, ds.Columns = 8192, LARGE // (8192 * 2)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.random.default_rng(1).integers(0, 4096, LARGE // 2, np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path.stat().st_size


@pytest.fixture
def s3():
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=endpoint,
                           skip_instance_cache=True)  # fmt: skip
    fs.mkdir("lake")
    try:
        yield fs, env
    finally:
        server.stop()


def test_a_large_instance_into_an_s3_lake_is_spooled(s3, tmp_path: Path, peers_available) -> None:
    fs, env = s3
    sent = tmp_path / "large.dcm"
    size = _large_ct(sent)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "receive", "--ae", "LAKE", "--port", str(port),
         "--bind", "127.0.0.1", "--lake", "s3://lake/received", "--allow", "MODALITY", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, **env, "TMPDIR": str(tmp_path)},
    )  # fmt: skip
    try:
        wait_until(lambda: _listening(port), 30, "receive", proc)
        before = tree_rss(proc.pid)  # the parent and its workers
        result = subprocess.run(
            ["storescu", "-aet", "MODALITY", "-aec", "LAKE", "127.0.0.1", str(port), str(sent)],
            env=PEER_ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        grown = rss_growth(before, tree_rss(proc.pid))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    landed = [p for p in fs.find("lake/received") if p.endswith(".dcm")]
    assert len(landed) == 1, err
    # the lake writes its own File Meta (the sender's AE in it): the data set lands as sent
    assert abs(fs.size(landed[0]) - size) < 1024
    assert fs.cat_file(landed[0], start=-4096) == sent.read_bytes()[-4096:]
    print(
        f"receiver peak RSS grew by {grown / 2**20:.0f} MiB for a {size / 2**20:.0f} MiB instance"
    )
    # spool memory (4 MiB) + one upload block (8 MiB) + buffers; on main it held it twice
    assert grown < 100 * 2**20, f"the receiver held the instance: +{grown / 2**20:.0f} MiB"
    assert not list((tmp_path / "dicomflow-incoming").glob("*.part"))  # the spool file is gone
