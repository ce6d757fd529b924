"""Fuzz the readers with mutants of the real corpus files, and say what each class gave.

``dicomflow.sample.mutants`` makes N seeded mutants of the corpus files (byte flips,
truncation, huge and undefined lengths, VR swaps, nesting bombs, duplicate and out-of-order
tags, poisoned values, File Meta corruption, mutations inside deflated data). For each mutation
class, a fresh child process:

1. scans them (``dfl.scan``, one worker): it must return one row per file, and no row may carry
   an internal error ("unexpected ...");
2. decodes the first frame of every mutant whose row has pixel data: each must give an array
   or one of the documented errors (``PixelDataError`` and its subclasses), and the process
   must live.

It prints one line per class: mutants, rows, rows read / refused, internal errors, frames
decoded / refused / internal errors, whether the child died, and the peak RSS of the scan and
the decode children. The exit status is non-zero when any class broke a rule.

    .venv/bin/python benchmarks/fuzz.py --n 100000          # the on-demand run (about an hour)
    .venv/bin/python benchmarks/fuzz.py --n 2000 --kinds deflate,depth-bomb

Mutants are written in chunks under ``.bench/fuzz/`` and removed after each chunk.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(os.environ.get("DICOMFLOW_SHARED", ROOT.parent / "shared")) / "corpus"
WORK = ROOT / ".bench" / "fuzz"

_CHILD = r"""
import collections, json, sys, warnings
from dicomflow.runtime import peak_rss
warnings.simplefilter("ignore")
import dicomflow as dfl
folder, decode = sys.argv[1], sys.argv[2] == "1"
table = dfl.scan(folder, workers=1).to_arrow()
rows = table.select(["uri", "error", "pixel_offset", "pixel_length"]).to_pylist()
internal = [r["error"] for r in rows if r["error"] and r["error"].startswith("unexpected ")]
scan_rss = peak_rss()
refused = sum(bool(r["error"]) for r in rows)
print(json.dumps({"phase": "scan", "rows": len(rows), "refused": refused,
                  "internal": internal[:5], "n_internal": len(internal), "rss": scan_rss}),
      flush=True)
frames = collections.Counter()
bad = []
if decode:
    good = table.filter(table.column("error").is_null())
    for row in good.to_pylist():
        if row["pixel_length"] is None:
            continue
        try:
            dfl.frames(row)[0].compute()
            frames["decoded"] += 1
        except dfl.PixelDataError:
            frames["refused"] += 1
        except Exception as exc:  # the finding: an error outside the documented ones
            frames["internal"] += 1
            bad.append(f"{row['uri']}: {type(exc).__name__}: {exc}"[:300])
print(json.dumps({"phase": "decode", **frames, "internal_examples": bad[:5],
                  "rss": peak_rss()}), flush=True)
"""


def seeds(limit_bytes: int = 2_000_000) -> list[tuple[str, bytes]]:
    """The corpus files the manifest lists, small enough to mutate quickly."""
    with open(CORPUS / "MANIFEST.csv", newline="") as f:
        paths = [CORPUS / row["path"] for row in csv.DictReader(f)]
    return [(str(p.relative_to(CORPUS)), p.read_bytes())
            for p in paths if p.is_file() and p.stat().st_size <= limit_bytes]  # fmt: skip


def run_class(kind: str, n: int, seed: int, chunk: int, decode: bool) -> dict:
    from dicomflow.sample import mutants

    totals: dict = collections.Counter()
    examples: list[str] = []
    peak = {"scan": 0, "decode": 0}
    died = []
    made = mutants(SEEDS, n, seed=seed, kinds=[kind])
    while True:
        batch = [m for _, m in zip(range(chunk), made)]
        if not batch:
            break
        folder = WORK / kind
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for m in batch:
            (folder / m.name).write_bytes(m.data)
        done = subprocess.run(
            [sys.executable, "-c", _CHILD, str(folder), "1" if decode else "0"],
            capture_output=True, text=True, timeout=3600,
        )  # fmt: skip
        phases = {}
        for line in done.stdout.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                phases[record.pop("phase")] = record
        if done.returncode != 0:
            died.append(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
        scan = phases.get("scan", {})
        totals["mutants"] += len(batch)
        totals["rows"] += scan.get("rows", 0)
        totals["refused"] += scan.get("refused", 0)
        totals["internal"] += scan.get("n_internal", 0)
        examples += scan.get("internal", [])
        dec = phases.get("decode", {})
        for key in ("decoded", "refused", "internal"):
            totals[f"frames_{key}"] += dec.get(key, 0)
        examples += dec.get("internal_examples", [])
        peak["scan"] = max(peak["scan"], scan.get("rss", 0))
        peak["decode"] = max(peak["decode"], dec.get("rss", 0))
        shutil.rmtree(folder, ignore_errors=True)
    return {"kind": kind, **totals, "peak": peak, "died": died, "examples": examples[:5]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="mutants in all (100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=2000, help="mutants per child process")
    parser.add_argument("--kinds", default="", help="comma-separated classes (default: all)")
    parser.add_argument("--no-decode", action="store_true", help="scan only")
    args = parser.parse_args()
    from dicomflow.sample import MUTATIONS

    kinds = [k for k in args.kinds.split(",") if k] or list(MUTATIONS)
    global SEEDS
    SEEDS = seeds()
    per_class = max(1, args.n // len(kinds))
    print(f"{len(SEEDS)} corpus files as seeds; {per_class} mutants per class, seed {args.seed}")
    head = ("class", "mutants", "rows", "read", "refused", "internal", "frames", "f.refused",
            "f.internal", "died", "scan RSS", "decode RSS")  # fmt: skip
    line = "{:<12}" + "{:>11}" * (len(head) - 1)
    print(line.format(*head))
    broken = False
    start = time.perf_counter()
    for kind in kinds:
        r = run_class(kind, per_class, args.seed, args.chunk, not args.no_decode)
        small = max(r["peak"].values()) < 2**30
        ok = (r["rows"] == r["mutants"] and not r["internal"] and not r["frames_internal"]
              and not r["died"] and small)  # fmt: skip
        broken |= not ok
        print(line.format(
            kind, r["mutants"], r["rows"], r["rows"] - r["refused"], r["refused"], r["internal"],
            r["frames_decoded"], r["frames_refused"], r["frames_internal"], len(r["died"]),
            f"{r['peak']['scan'] / 2**20:.0f} MB", f"{r['peak']['decode'] / 2**20:.0f} MB",
        ), flush=True)  # fmt: skip
        for note in r["died"] + r["examples"]:
            print(f"    {note}")
    print(f"{time.perf_counter() - start:.0f} s; {'a rule broke' if broken else 'every rule held'}")
    return 1 if broken else 0


SEEDS: list[tuple[str, bytes]] = []

if __name__ == "__main__":
    sys.exit(main())
