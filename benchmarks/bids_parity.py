"""How many of dcm2niix's sidecar keys dicomflow writes, series by series, over the corpus.

dcm2niix runs (``-b y -z n -f %j_%s``) on the MR and CT files of each corpus folder; each of its
sidecars is matched with dicomflow's for the same series (the stack whose sidecar agrees most)
and counted: keys present, keys with the same value (numbers to 0.1%). Not a timing: run it on
an earlier commit and on this checkout (``benchmarks/before_after.py COMMIT -- bids_parity.py``)
to compare::

    .venv/bin/python benchmarks/bids_parity.py            # one line per sidecar, then a total
    .venv/bin/python benchmarks/bids_parity.py --verbose  # and each key missing or different
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DICOMFLOW_SHARED", ROOT.parent / "shared"))


def same(ours, theirs) -> bool:
    if isinstance(theirs, bool) or isinstance(ours, bool):
        return ours == theirs
    if isinstance(theirs, int | float) and isinstance(ours, int | float):
        return math.isclose(ours, theirs, rel_tol=1e-3, abs_tol=1e-6)
    if isinstance(theirs, list) and isinstance(ours, list):
        return len(ours) == len(theirs) and all(same(a, b) for a, b in zip(ours, theirs))
    return ours == theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    from dicomflow import scan, volumes
    from dicomflow.pixels import bids_sidecar

    corpus = SHARED / "corpus"
    with open(corpus / "MANIFEST.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["modality"] in ("MR", "CT")]
    folders: dict[str, list[Path]] = defaultdict(list)
    for row in rows:
        folders[str(Path(row["path"]).parent)].append(corpus / row["path"])
    totals = [0, 0, 0]  # dcm2niix keys, present in ours, same value
    with tempfile.TemporaryDirectory() as tmp:
        for folder, files in sorted(folders.items()):
            src = Path(tmp) / "in" / folder.replace("/", "_")
            out = Path(tmp) / "out" / folder.replace("/", "_")
            src.mkdir(parents=True)
            out.mkdir(parents=True)
            for path in files:
                (src / path.name).symlink_to(path)
            subprocess.run(["dcm2niix", "-b", "y", "-z", "n", "-f", "%j_%s", "-o", str(out),
                            str(src)], capture_output=True, timeout=300)  # fmt: skip
            vols = volumes(scan(str(src), workers=1).to_arrow())
            cars = [(str(v.info.get("SeriesInstanceUID") or ""), bids_sidecar(v)) for v in vols]
            for reference in sorted(out.glob("*.json")):
                theirs = json.loads(reference.read_text())
                uid = reference.name.split("_")[0]
                totals[0] += len(theirs)
                found = [car for series, car in cars if series == uid]
                if not found:
                    print(f"{folder} {reference.name[-24:]}: no volume ({len(theirs)} keys)")
                    continue
                ours = max(found, key=lambda c: sum(k in c and same(c[k], v)
                                                    for k, v in theirs.items()))  # fmt: skip
                present = [k for k in theirs if k in ours]
                equal = [k for k in present if same(ours[k], theirs[k])]
                totals[1] += len(present)
                totals[2] += len(equal)
                print(f"{folder} {reference.name[-24:]}: keys {len(present)}/{len(theirs)}, "
                      f"values {len(equal)}/{len(theirs)}")  # fmt: skip
                if args.verbose:
                    for key in theirs:
                        if key not in ours:
                            print(f"    missing {key}: {theirs[key]!r}")
                        elif key not in equal:
                            print(
                                f"    differs {key}: ours {ours[key]!r}, dcm2niix {theirs[key]!r}"
                            )
    print(f"total: dcm2niix wrote {totals[0]} keys; dicomflow has {totals[1]}, "
          f"{totals[2]} with the same value")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
