"""``find`` and ``pull`` with a DICOMweb ``--pacs``: QIDO-RS plans, WADO-RS fills the lake the way
a DIMSE pull does; credentials come only from the environment."""

from __future__ import annotations

import http.server
import io
import json
import os
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
from pydicom import dcmread

from dicomflow.cli import main
from dicomflow.network import DicomWeb, PullOptions, find, pull, read_records

from .conftest import PEER_ENV, Orthanc, dataset_bytes, lake_files, wait_until

CT_SERIES_FILES = 28
USER, PASSWORD = "alice", "wonder land"  # a space: it must survive the environment


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, env: dict[str, str] | None = None) -> Ran:
    """``dicomflow ARGS`` in this process (a process of its own costs seconds of imports)."""
    out, err = io.StringIO(), io.StringIO()
    with mock.patch.dict(os.environ, env or {}), redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return Ran(code, out.getvalue(), err.getvalue())


def relative(lake: Path) -> list[str]:
    return sorted(str(p.relative_to(lake)) for p in lake_files(lake))


def test_dimse_and_dicomweb_pulls_land_the_same_lake(orthanc, tmp_path):
    dimse, web = tmp_path / "dimse", tmp_path / "web"
    a = pull(orthanc.peer, "Modality=CT", dimse, PullOptions(ae_title="LAKE", method="get"))
    b = pull(orthanc.dicomweb, "Modality=CT", web)
    assert a.complete and b.complete and (a.method, b.method) == ("get", "wado-rs")
    assert a.fetched == b.fetched == CT_SERIES_FILES
    # the same layout: <study>/<series>/<sop>.dcm
    assert relative(dimse) == relative(web) and len(relative(web)) == CT_SERIES_FILES
    # the same records, but for where they came from
    ra, rb = read_records(str(dimse)), read_records(str(web))
    assert ra.schema == rb.schema
    same = ["sop_class_uid", "sop_instance_uid", "study_instance_uid", "series_instance_uid",
            "transfer_syntax_uid", "source_sop_instance_uid"]  # fmt: skip
    assert ra.sort_by("sop_instance_uid").select(same) == rb.sort_by("sop_instance_uid").select(
        same
    )
    assert set(ra.column("source").to_pylist()) == {"c-get"}
    assert set(rb.column("source").to_pylist()) == {"wado-rs"}
    # the same instances: SOP Instance UIDs, pixel bytes, and here the whole data sets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in relative(web):
            x, y = dcmread(dimse / name), dcmread(web / name)
            assert x.SOPInstanceUID == y.SOPInstanceUID == Path(name).stem
            assert x.PixelData == y.PixelData
            assert dataset_bytes((dimse / name).read_bytes()) == dataset_bytes(
                (web / name).read_bytes()
            )
    # the same report, row for row; the bytes differ by the File Meta's Source AE Title only
    volatile = ["method", "seconds", "started", "waited", "bytes"]
    assert a.table.drop_columns(volatile).to_pylist() == b.table.drop_columns(volatile).to_pylist()
    assert abs(a.bytes - b.bytes) <= CT_SERIES_FILES * len("ORTHANC ") + CT_SERIES_FILES * 8


def test_dicomweb_pull_resumes_with_the_missing_instances_only(orthanc, tmp_path):
    first = pull(orthanc.dicomweb, "Modality=CT", tmp_path)
    assert first.complete
    files = lake_files(tmp_path)
    for p in files[::5]:
        p.unlink()
    again = pull(orthanc.dicomweb, "Modality=CT", tmp_path)
    (row,) = again.table.to_pylist()
    assert row["status"] == "complete" and row["fetched"] == len(files[::5])
    assert row["present_before"] == CT_SERIES_FILES - len(files[::5])
    assert len(lake_files(tmp_path)) == CT_SERIES_FILES
    third = pull(orthanc.dicomweb, "Modality=CT", tmp_path)
    assert third.fetched == 0 and third.table.column("status").to_pylist() == ["already complete"]


def test_cli_find_and_pull_over_dicomweb(orthanc, tmp_path):
    out = tmp_path / "series.parquet"
    found = cli("find", "--pacs", orthanc.dicomweb, "--level", "series", "--query",
                "Modality=CT", "-o", str(out))  # fmt: skip
    assert found.returncode == 0, found.stderr
    dimse = find(orthanc.peer, "Modality=CT", level="series")
    assert pq.read_table(out).to_pylist() == dimse.to_pylist()
    printed = cli("find", "--pacs", orthanc.dicomweb, "--query", "PatientID=crlab")
    assert printed.returncode == 0 and "1 answers" in printed.stderr
    cohort = tmp_path / "cohort.csv"
    cohort.write_text("AccessionNumber,PatientID\n2,\n,crlab\nNOPE,\n")
    lake = tmp_path / "lake"
    pulled = cli("pull", "--pacs", orthanc.dicomweb, "--cohort", str(cohort), "--lake", str(lake),
                 "--max-instances-per-second", "1000")  # fmt: skip
    assert pulled.returncode == 1, pulled.stderr  # complete, but a row matched nothing
    assert "2/2 series complete" in pulled.stderr and "by wado-rs" in pulled.stderr
    assert "1 of 3 cohort rows matched nothing" in pulled.stderr
    assert "row 3: AccessionNumber=NOPE" in pulled.stderr
    assert len(lake_files(lake)) == 3
    refused = cli("pull", "--pacs", orthanc.dicomweb, "--query", "Modality=CT", "--lake",
                  str(lake), "--method", "move")  # fmt: skip
    assert refused.returncode == 2 and "WADO-RS" in refused.stderr


# -- credentials -------------------------------------------------------------------------------


class Recorder(http.server.BaseHTTPRequestHandler):
    """A DICOMweb server that knows nothing and remembers each request's headers."""

    seen: list[dict[str, str]] = []

    def do_GET(self):  # noqa: N802 - http.server's name
        Recorder.seen.append(dict(self.headers))
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder() -> Iterator[str]:
    Recorder.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/dicom-web"
    finally:
        server.shutdown()


def test_token_and_password_come_from_the_environment_only(recorder, tmp_path):
    token = "tok-3f9a-never-shown"
    found = cli("find", "--pacs", recorder, "--token-env", "DFL_TOKEN", env={"DFL_TOKEN": token})
    assert found.returncode == 0, found.stderr
    assert Recorder.seen[-1]["Authorization"] == f"Bearer {token}"
    lake = tmp_path / "lake"
    pulled = cli("pull", "--pacs", recorder, "--query", "PatientID=P1", "--lake", str(lake),
                 "--user", USER, "--password-env", "DFL_PW", env={"DFL_PW": PASSWORD})  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    import base64

    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert Recorder.seen[-1]["Authorization"] == f"Basic {basic}"
    for result in (found, pulled):
        assert token not in result.stdout + result.stderr
        assert PASSWORD not in result.stdout + result.stderr
    for path in lake.rglob("*"):  # the plan and the report hold no secret
        if path.is_file():
            data = path.read_bytes()
            assert token.encode() not in data and PASSWORD.encode() not in data


def test_credential_mistakes_are_usage_errors(recorder, orthanc):
    missing = cli("find", "--pacs", recorder, "--token-env", "DFL_UNSET_VARIABLE")
    assert missing.returncode == 2
    assert "the environment variable DFL_UNSET_VARIABLE is not set" in missing.stderr
    half = cli("find", "--pacs", recorder, "--user", USER)
    assert half.returncode == 2 and "needs both --user NAME and --password-env VAR" in half.stderr
    dimse = cli("find", "--pacs", str(orthanc.peer), "--token-env", "DFL_TOKEN",
                env={"DFL_TOKEN": "x"})  # fmt: skip
    assert dimse.returncode == 2 and "is a DIMSE peer" in dimse.stderr
    not_a_peer = cli("find", "--pacs", "dicom-web.example.org")
    assert not_a_peer.returncode == 2 and "or a DICOMweb URL" in not_a_peer.stderr
    assert Recorder.seen == []  # nothing was sent


@pytest.fixture(scope="module")
def orthanc_with_login(tmp_path_factory, peers_available, round_trip_files) -> Iterator[Orthanc]:
    """An Orthanc whose HTTP side (REST and DICOMweb) asks for a user name and password."""
    import requests

    server = Orthanc(tmp_path_factory.mktemp("orthanc-login"))
    config_path = server.workdir / "orthanc.json"
    config = json.loads(config_path.read_text())
    config.update(AuthenticationEnabled=True, RegisteredUsers={USER: PASSWORD})
    config_path.write_text(json.dumps(config))
    server.proc = subprocess.Popen(
        ["Orthanc", "--no-jobs", f"--logfile={server.workdir / 'orthanc.log'}", str(config_path)],
        env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        url = f"{server.url}/system"
        wait_until(lambda: requests.get(url, auth=(USER, PASSWORD), timeout=1).ok, 30,
                   "Orthanc with a login", server.proc)  # fmt: skip
        assert requests.get(url, timeout=5).status_code == 401
        ct = [p for p in round_trip_files if "dcm_qa_ct_ge" in str(p)]
        with requests.Session() as s:
            s.auth = (USER, PASSWORD)
            for path in ct:
                s.post(
                    f"{server.url}/instances", data=path.read_bytes(), timeout=30
                ).raise_for_status()
        yield server
    finally:
        server.kill()


def test_pull_with_basic_authentication_from_orthanc(orthanc_with_login, tmp_path):
    url = orthanc_with_login.dicomweb
    lake = tmp_path / "lake"
    pulled = cli("pull", "--pacs", url, "--query", "Modality=CT", "--lake", str(lake),
                 "--user", USER, "--password-env", "DFL_PW", env={"DFL_PW": PASSWORD})  # fmt: skip
    assert pulled.returncode == 0, pulled.stderr
    assert len(lake_files(lake)) == CT_SERIES_FILES
    wrong = cli("pull", "--pacs", url, "--query", "Modality=CT", "--lake", str(tmp_path / "no"),
                "--user", USER, "--password-env", "DFL_PW", env={"DFL_PW": "guess"})  # fmt: skip
    assert wrong.returncode == 2 and "HTTP 401" in wrong.stderr
    assert lake_files(tmp_path / "no") == []
    # the same from Python: the DicomWeb object holds the credentials
    web = DicomWeb(url, auth=(USER, PASSWORD))
    again = pull(web, "Modality=CT", lake)
    assert again.complete and again.fetched == 0
