"""Real peers for the network tests: Orthanc (+ DICOMweb) and DCMTK dcmqrscp, started here.

Each peer runs in its own session (``start_new_session=True``) with ``TCP_NODELAY=1``, on free
ports chosen at run time, in a temporary folder, and is killed at teardown. See
``../shared/docs/PEERS.md`` for the recipes these follow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dicomflow.dicom import split_part10
from dicomflow.network import Peer

REPO = Path(__file__).resolve().parents[2]
PEER_ENV = {**os.environ, "TCP_NODELAY": "1"}
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

#: Corpus files whose data set bytes Orthanc sends back unchanged over C-GET/C-MOVE/WADO
#: (DCMTK re-encodes some others, e.g. dropping group length elements).
ROUND_TRIP = (
    "series/dcm_qa_ct_ge",  # 28 CT slices, one series
    "series/dcm_qa_siemens_sag_asc_36sl",  # 2 Siemens mosaics
    "transfer-syntax/jpeg-baseline/SC_jpeg_no_color_transform.dcm",
    "transfer-syntax/explicit-vr-be/ExplVR_BigEnd.dcm",
    "charsets/chrRuss.dcm",
    "charsets/chrH31.dcm",
    "modality/SR/test-SR.dcm",
    "modality/SEG/highdicom_seg_image_ct_binary.dcm",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready after {timeout} s")


def _kill_group(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def corpus_files(corpus: Path, entries: Iterable[str]) -> list[Path]:
    out: list[Path] = []
    for entry in entries:
        path = corpus / entry
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.is_file() and _is_part10(p))
        else:
            out.append(path)
    return out


def copy_corpus(corpus: Path, entries: Iterable[str], dest: Path) -> None:
    """Copy corpus files and folders (whole, as they are) under ``dest``, at their own paths."""
    for entry in entries:
        src, to = corpus / entry, dest / entry
        if src.is_dir():
            shutil.copytree(src, to)
        else:
            to.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, to)


def _is_part10(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def dataset_bytes(data: bytes) -> bytes:
    """The data set of a Part 10 object (what travels over the network)."""
    return bytes(split_part10(data)[3])


@dataclass
class Orthanc:
    """An Orthanc process with its DICOM and HTTP ports; restartable on the same storage."""

    workdir: Path
    aet: str = "ORTHANC"
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        config = {
            "Name": "dicomflow-tests",
            "StorageDirectory": str(self.workdir / "db"),
            "IndexDirectory": str(self.workdir / "db"),
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True,
                         "WadoRoot": "/wado", "Ssl": False},
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": {},
            "SyncStorageArea": False,
            "SaveJobs": False,
            "StableAge": 5,
            "DicomScuTimeout": 30,
            "DicomScpTimeout": 60,
        }  # fmt: skip
        (self.workdir / "orthanc.json").write_text(json.dumps(config, indent=1))

    @property
    def peer(self) -> Peer:
        return Peer(self.aet, "127.0.0.1", self.dicom_port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self) -> Orthanc:
        import requests

        from dicomflow.network import AssociationOptions, echo

        self.proc = subprocess.Popen(
            ["Orthanc", "--no-jobs", f"--logfile={self.workdir / 'orthanc.log'}",
             str(self.workdir / "orthanc.json")],
            env=PEER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        opts = AssociationOptions(calling_ae="PROBE", connection_timeout=1, acse_timeout=2)
        wait_until(lambda: requests.get(f"{self.url}/system", timeout=1).ok, 30, "Orthanc HTTP",
                   self.proc)  # fmt: skip
        wait_until(lambda: echo(self.peer, options=opts) >= 0, 30, "Orthanc DICOM", self.proc)
        return self

    def kill(self) -> None:
        _kill_group(self.proc)
        self.proc = None

    def register(self, aet: str, port: int, host: str = "127.0.0.1") -> None:
        import requests

        r = requests.put(f"{self.url}/modalities/{aet}",
                         json={"AET": aet, "Host": host, "Port": port}, timeout=10)  # fmt: skip
        r.raise_for_status()

    def upload(self, paths: Iterable[Path]) -> list[dict]:
        import requests

        answers = []
        with requests.Session() as s:
            for path in paths:
                r = s.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30)
                r.raise_for_status()
                answers.append(r.json())
        return answers

    def delete_instance(self, sop_instance_uid: str) -> None:
        """Remove an instance a test stored, so the shared Orthanc keeps its known content."""
        import requests

        r = requests.post(f"{self.url}/tools/lookup", data=sop_instance_uid, timeout=10)
        r.raise_for_status()
        for item in r.json():
            if item.get("Type") == "Instance":
                requests.delete(f"{self.url}/instances/{item['ID']}", timeout=10).raise_for_status()

    def storescu(self, folder: Path, calling: str = "LOADER") -> None:
        subprocess.run(
            ["storescu", "-aet", calling, "-aec", self.aet, "+sd", "+r", "127.0.0.1",
             str(self.dicom_port), str(folder)],
            env=PEER_ENV, check=True, capture_output=True, timeout=300,
        )  # fmt: skip


@dataclass
class Dcmqrscp:
    """DCMTK's Q/R SCP; its HostTable knows ``LAKE`` at ``lake_port`` (fixed at start)."""

    workdir: Path
    aet: str = "DCMQRSCP"
    port: int = field(default_factory=free_port)
    lake_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        (self.workdir / "dcmqrscp.cfg").write_text(
            f"NetworkTCPPort  = {self.port}\nMaxPDUSize      = 16384\nMaxAssociations = 16\n\n"
            "HostTable BEGIN\n"
            f"lake     = (LAKE, 127.0.0.1, {self.lake_port})\n"
            "HostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n"
            "AETable BEGIN\n"
            f"{self.aet}  {self.workdir / 'db'}  RW  (100, 1024mb)  ANY\n"
            "AETable END\n"
        )

    @property
    def peer(self) -> Peer:
        return Peer(self.aet, "127.0.0.1", self.port)

    def start(self) -> Dcmqrscp:
        from dicomflow.network import AssociationOptions, echo

        log = open(self.workdir / "dcmqrscp.log", "ab")
        self.proc = subprocess.Popen(
            ["dcmqrscp", "-c", str(self.workdir / "dcmqrscp.cfg"), str(self.port)],
            env=PEER_ENV, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        opts = AssociationOptions(calling_ae="PROBE", connection_timeout=1, acse_timeout=2)
        wait_until(lambda: echo(self.peer, options=opts) >= 0, 30, "dcmqrscp", self.proc)
        return self

    def kill(self) -> None:
        _kill_group(self.proc)
        self.proc = None

    def load(self, paths: Iterable[Path]) -> None:
        subprocess.run(
            ["storescu", "-aet", "LOADER", "-aec", self.aet, "127.0.0.1", str(self.port),
             *[str(p) for p in paths]],
            env=PEER_ENV, check=True, capture_output=True, timeout=300,
        )  # fmt: skip


@pytest.fixture(scope="session")
def peers_available() -> None:
    missing = [t for t in ("Orthanc", "dcmqrscp", "storescu") if shutil.which(t) is None]
    if missing or not Path(DICOMWEB_PLUGIN).exists():
        pytest.fail(f"network test peers are not installed: {missing or DICOMWEB_PLUGIN}")


@pytest.fixture(scope="session")
def round_trip_files(corpus: Path) -> list[Path]:
    return corpus_files(corpus, ROUND_TRIP)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory, peers_available, round_trip_files) -> Iterator[Orthanc]:
    """An Orthanc loaded with :data:`ROUND_TRIP` corpus files."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    try:
        server.upload(round_trip_files)
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def dcmqrscp(tmp_path_factory, peers_available, round_trip_files) -> Iterator[Dcmqrscp]:
    """A dcmqrscp loaded with the uncompressed ones of the same corpus files (storescu and
    dcmqrscp propose uncompressed transfer syntaxes only, unless told one compressed one)."""
    server = Dcmqrscp(tmp_path_factory.mktemp("dcmqrscp")).start()
    try:
        server.load([p for p in round_trip_files if "jpeg" not in str(p) and "SEG" not in str(p)])
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory) -> Path:
    """A synthetic CT/MR archive (benchmarks/synth.py): 360 files of 512 x 512, 4 series."""
    out = tmp_path_factory.mktemp("synth") / "archive"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "synth.py"), str(out), "-n", "360",
         "--seed", "7"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def orthanc_synth(tmp_path_factory, peers_available, synth_archive) -> Iterator[Orthanc]:
    """A second Orthanc holding the synthetic archive (tests may kill and restart it)."""
    server = Orthanc(tmp_path_factory.mktemp("orthanc-synth")).start()
    try:
        server.storescu(synth_archive)
        yield server
    finally:
        server.kill()


def originals_by_uid(paths: Iterable[Path]) -> dict[str, bytes]:
    """SOP Instance UID -> data set bytes of each source file."""
    out = {}
    for path in paths:
        data = Path(path).read_bytes()
        _, sop, _, body = split_part10(data)
        out[sop] = bytes(body)
    return out


def lake_files(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("*.dcm") if "_lake" not in p.parts)


def tree_rss(pid: int) -> dict[int, int]:
    """The peak resident memory (VmHWM) of a process and of each of its descendants: a
    receiver's workers included."""
    from dicomflow.runtime import peak_rss

    out: dict[int, int] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            out[p] = peak_rss(p)
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return out


def rss_growth(before: dict[int, int], after: dict[int, int]) -> int:
    """The most any one process of a tree grew between two :func:`tree_rss` (a process that
    was not there before counts whole)."""
    return max(peak - before.get(p, 0) for p, peak in after.items())
