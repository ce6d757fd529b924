"""Run benchmarks on an earlier commit and on this checkout, one right after the other.

A refactoring must not make anything slower; this runs the same benchmark command on both
trees in one session, alternating (base, this, base, this ...), so both see the same machine:

    .venv/bin/python benchmarks/before_after.py 3c67699 --rounds 2 -- \\
        "bench_scan.py --quick" "bench_deid.py --n 200 --skip-tools" "bench_transcode.py --n 100"

The earlier commit is checked out (once) under ``.bench/base-<commit>`` as a git worktree; each
command runs there with ``PYTHONPATH`` set to that tree, and here with this tree, from the same
virtual environment. Outputs are saved under ``.bench/before-after/`` and their last lines
printed side by side. Benchmarks that exist only here run from this checkout's copy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / ".bench" / "before-after"


def worktree(commit: str) -> Path:
    sha = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    tree = ROOT / ".bench" / f"base-{sha}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT,
                       check=True)  # fmt: skip
    return tree


def run(tree: Path, command: str, label: str, round_: int) -> Path:
    script, *args = shlex.split(command)
    bench = tree / "benchmarks" / script
    if not bench.exists():
        bench = ROOT / "benchmarks" / script
    env = dict(os.environ, PYTHONPATH=str(tree))
    log = OUT / f"{Path(script).stem}-{label}-{round_}.txt"
    with open(log, "w") as out:
        subprocess.run([sys.executable, str(bench), *args], cwd=tree, env=env, stdout=out,
                       stderr=subprocess.STDOUT, check=False)  # fmt: skip
    return log


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit", help="the earlier commit (the base)")
    parser.add_argument("commands", nargs="+", help="benchmark scripts with their options")
    parser.add_argument("--rounds", type=int, default=1, help="base/this pairs per command")
    parser.add_argument("--tail", type=int, default=12, help="lines of each output shown")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    base = worktree(args.commit)
    for command in args.commands:
        for round_ in range(1, args.rounds + 1):
            for label, tree in (("base", base), ("this", ROOT)):
                log = run(tree, command, label, round_)
                lines = log.read_text().splitlines()[-args.tail :]
                print(f"== {command} [{label} {args.commit if label == 'base' else 'HEAD'}, "
                      f"round {round_}] -> {log.relative_to(ROOT)}")  # fmt: skip
                print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
