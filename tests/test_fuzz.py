"""Fuzzing the readers: 1,000 seeded mutants of the real corpus, ten classes of damage.

Every mutant must come out as exactly one catalog row, none with an internal error, in a
scanning process that stays under 1 GB; every mutant whose row has pixel data must decode to
frames or to a documented ``PixelDataError``, in a process that lives. ``benchmarks/fuzz.py
--n 100000`` runs the same on demand, class by class.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicomflow.sample import MUTATIONS, mutants

PER_CLASS = 100

_CHILD = r"""
import json, sys, warnings
from dicomflow.runtime import peak_rss
warnings.simplefilter("ignore")
import dicomflow as dfl
table = dfl.scan(sys.argv[1], workers=1).to_arrow()
rows = table.select(["uri", "error", "pixel_length"]).to_pylist()
out = {"rows": {r["uri"].rsplit("/", 1)[-1]: r["error"] for r in rows},
       "scan_rss": peak_rss(),
       "frames": {}}
for row in table.filter(table.column("error").is_null()).to_pylist():
    if row["pixel_length"] is None:
        continue
    name = row["uri"].rsplit("/", 1)[-1]
    try:
        dfl.frames(row)[0].compute()
        out["frames"][name] = "decoded"
    except dfl.PixelDataError as exc:
        out["frames"][name] = "refused: " + type(exc).__name__
    except Exception as exc:
        out["frames"][name] = f"INTERNAL {type(exc).__name__}: {exc}"[:300]
out["rss"] = peak_rss()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def mutant_folder(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with open(corpus / "MANIFEST.csv", newline="") as f:
        paths = [corpus / row["path"] for row in csv.DictReader(f)]
    seeds = [(str(p), p.read_bytes()) for p in paths if p.stat().st_size <= 2_000_000]
    folder = tmp_path_factory.mktemp("mutants")
    for m in mutants(seeds, PER_CLASS * len(MUTATIONS), seed=2026):
        (folder / m.name).write_bytes(m.data)
    return folder


@pytest.fixture(scope="module")
def outcome(mutant_folder: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(mutant_folder)],
        capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert done.returncode == 0, f"the process died ({done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_mutant_is_one_row_without_internal_errors(mutant_folder: Path, outcome) -> None:
    names = sorted(p.name for p in mutant_folder.iterdir())
    assert len(names) == PER_CLASS * len(MUTATIONS) >= 1000
    assert sorted(outcome["rows"]) == names
    internal = {n: e for n, e in outcome["rows"].items() if e and e.startswith("unexpected ")}
    assert not internal, internal
    for kind in MUTATIONS:  # every class really produced damage that the reader saw
        errors = [e for n, e in outcome["rows"].items() if n.endswith(kind) and e]
        assert errors, f"no {kind} mutant was refused: the mutation does nothing"


def test_the_scan_of_the_mutants_stays_under_1_gb(outcome) -> None:
    assert outcome["scan_rss"] < 2**30


def test_decoding_every_mutant_gives_frames_or_the_documented_error(outcome) -> None:
    frames = outcome["frames"]
    assert len(frames) > 50  # mutants whose rows still describe pixel data
    internal = {n: r for n, r in frames.items() if r.startswith("INTERNAL")}
    assert not internal, internal
    assert any(r == "decoded" for r in frames.values())
    assert outcome["rss"] < 2**30
