"""dicomflow's DIMSE needs no pynetdicom: every network call, in a process that cannot import it."""

from __future__ import annotations

import json
import subprocess
import sys

from dicomflow.network import AssociationOptions, find

from .conftest import REPO, free_port

CT_SERIES_FILES = 28

SCRIPT = r"""
import importlib.abc, json, sys

class NoPynetdicom(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "pynetdicom":
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, NoPynetdicom())
try:
    import pynetdicom  # noqa: F401
    blocked = False
except ImportError:
    blocked = True

from dicomflow.network import (AssociationOptions, PullOptions, SCPOptions, StorageSCP,
                               StoreSink, echo, find, get, move, pull)
from dicomflow.pipeline import Instance

peer, study, root, port, path = sys.argv[1:]
opts = AssociationOptions(calling_ae="NOPYNET")
out = {"blocked": blocked, "echo": echo(peer, options=opts) > 0}
out["find"] = find(peer, {"StudyInstanceUID": study}, level="image", options=opts).num_rows
out["get"] = get(peer, {"StudyInstanceUID": study}, root + "/get", options=opts).received
scp_opts = SCPOptions(ae_title="NOPYNET", host="127.0.0.1", port=int(port),
                      calling_aes=("ORTHANC",), fsync="none")
with StorageSCP(root + "/move", scp_opts) as scp:
    out["move"] = move(peer, {"StudyInstanceUID": study}, scp, options=opts).completed
    scp.wait_idle(idle=0.2, timeout=30)
    out["moved"] = sum(a.stored for a in scp.associations)
sink = StoreSink(peer, opts)
out["store"] = len(sink.write(Instance(path)))  # already in Orthanc: stored again, unchanged
sink.close()
report = pull(peer, f"StudyInstanceUID={study}", root + "/pull",
              PullOptions(ae_title="NOPYNET", method="get", association=opts))
out["pull"] = report.complete
out["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] == "pynetdicom")
print(json.dumps(out))
"""


def test_every_call_works_without_pynetdicom(orthanc, round_trip_files, tmp_path):
    opts = AssociationOptions(calling_ae="LAKE")
    table = find(orthanc.peer, "Modality=CT", level="series", options=opts)
    rows = [r for r in table.to_pylist() if r["NumberOfSeriesRelatedInstances"] == CT_SERIES_FILES]
    study = rows[0]["study_instance_uid"]
    port = free_port()
    orthanc.register("NOPYNET", port)
    ct_file = next(p for p in round_trip_files if "dcm_qa_ct_ge" in str(p))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(orthanc.peer), study, str(tmp_path), str(port),
         str(ct_file)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "blocked": True,
        "echo": True,
        "find": CT_SERIES_FILES,
        "get": CT_SERIES_FILES,
        "move": CT_SERIES_FILES,
        "moved": CT_SERIES_FILES,
        "store": 1,
        "pull": True,
        "loaded": [],
    }
