"""``make bench``: every benchmark in one run, then one table of the ratios against the tools a
user would otherwise pick.

Each benchmark runs as its own process, one after the other (never two at once: they would
measure each other), with its full output kept in ``.bench/logs/NAME.log``. The figures come
from the benchmarks' own :func:`_summary.record` calls, so the table shows exactly what each
benchmark printed. At the end it prints the table and writes it to ``.bench/summary.md`` and
``.bench/summary.json``; the README's figures are copied from that table.

Usage (from the repository root)::

    .venv/bin/python benchmarks/run_all.py            # every benchmark, default sizes (> 1 hour)
    .venv/bin/python benchmarks/run_all.py --quick    # small sizes, one round (about 20 min)
    .venv/bin/python benchmarks/run_all.py --only scan,deid --quick

The competitors that are Python packages (``deid``, ``dicognito``, ``dicom-anonymizer``,
``dicom2nifti``) are installed into ``.bench/venv-tools`` on first use, never into the project's
environment; DCMTK, dcm2niix, gdcmconv and Orthanc come from ``scripts/system-deps.sh``. A
benchmark whose contender is missing says so in its log and its rows show ``n/a``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".bench"
TOOLS_VENV = BENCH / "venv-tools"
TOOLS = ("deid", "dicognito", "dicom-anonymizer", "dicom2nifti")


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    quick: tuple[str, ...]
    full: tuple[str, ...] = ()
    tools: bool = False  # needs the competitors' virtualenv


BENCHES = (
    Bench("scan", "bench_scan.py", ("--quick",)),
    Bench("deid", "bench_deid.py", ("--n", "200", "--repeat", "1"), tools=True),
    Bench("verify", "bench_verify.py", ("--n", "300", "--repeat", "1")),
    Bench("transcode", "bench_transcode.py", ("--n", "100", "--repeat", "1")),
    Bench("pixels", "bench_pixels.py", ("--quick",), tools=True),
    Bench("seg", "bench_seg.py", ("--slices", "60", "--repeat", "2")),
    Bench("receive", "bench_receive.py", ("--n", "500", "--repeat", "1")),
    Bench("pull", "bench_pull.py", ("--n", "300", "--repeat", "1")),
    Bench("serve", "bench_serve.py", ("--rows", "200000", "--files", "50", "--seconds", "3")),
    Bench("ocr", "bench_ocr.py", ("--planted", "40", "--clean", "20")),
    Bench("cluster", "bench_cluster.py", ("--n", "1000", "--tasks", "2000")),
    Bench("gpu", "bench_gpu.py", ("--batch", "64", "--repeat", "2")),  # exits 2 without a GPU
)


def ensure_tools(python: str) -> str | None:
    """The competitors' virtualenv, made on first use; None when it cannot be made here."""
    exe = TOOLS_VENV / "bin" / "python"
    if exe.exists():
        return str(exe)
    print(f"installing the competitors ({', '.join(TOOLS)}) into {TOOLS_VENV.relative_to(ROOT)}")
    try:
        subprocess.run([python, "-m", "venv", str(TOOLS_VENV)], check=True)
        subprocess.run([str(exe), "-m", "pip", "install", "--quiet", *TOOLS], check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"  could not install them ({exc}); their rows will be n/a")
        return None
    return str(exe)


def tool_args(bench: Bench, tools_python: str | None) -> list[str]:
    if not bench.tools or tools_python is None:
        return []
    if bench.name == "deid":
        return ["--tools-venv", str(TOOLS_VENV)]
    if bench.name == "pixels":
        return ["--dicom2nifti-python", tools_python]
    return []


def run_one(bench: Bench, args: list[str], summary: Path, log: Path) -> tuple[int, float]:
    env = dict(os.environ, DICOMFLOW_BENCH_SUMMARY=str(summary))
    command = [sys.executable, str(ROOT / "benchmarks" / bench.script), *args]
    start = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command[1:]) + "\n")
        out.flush()
        code = subprocess.run(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    return code, time.perf_counter() - start


def fmt_value(row: dict) -> str:
    unit = row["unit"]
    value = row["value"]
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ratio":
        return f"{value:.2f}"
    return f"{value:,.1f} {unit}" if value < 1000 else f"{value:,.0f} {unit}"


def fmt_target(row: dict) -> str:
    if row["target"] is None:
        return ""
    sign = "<=" if row["lower_is_better"] else ">="
    probe = dict(row, value=row["target"])
    return f"{sign} {fmt_value(probe)}"


def table(rows: list[dict], codes: dict[str, tuple[int, float]]) -> str:
    lines = [
        "| benchmark | measure | against | value | target | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        verdict = {True: "PASS", False: "FAIL", None: ""}[row["pass"]]
        lines.append(
            f"| {row['bench']} | {row['measure']} | {row['against']} | {fmt_value(row)} "
            f"| {fmt_target(row)} | {verdict} |"
        )
    seen = {row["bench"] for row in rows}
    for name, (code, seconds) in codes.items():
        if name not in seen:
            lines.append(
                f"| {name} | (no figure: exit {code} after {seconds:.0f} s, see its log) | | | | |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one round")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--no-tools", action="store_true", help="do not install the competitors")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHES if not args.only or b.name in args.only.split(",")]
    unknown = set(filter(None, args.only.split(","))) - {b.name for b in BENCHES}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(b.name for b in BENCHES)}")  # fmt: skip
    logs = BENCH / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    summary = BENCH / "summary.jsonl"
    summary.unlink(missing_ok=True)
    tools_python = None
    if any(b.tools for b in chosen) and not args.no_tools:
        tools_python = ensure_tools(sys.executable)
    codes: dict[str, tuple[int, float]] = {}
    for bench in chosen:
        bench_args = [*(bench.quick if args.quick else bench.full), *tool_args(bench, tools_python)]
        log = logs / f"{bench.name}.log"
        print(f"{bench.name:10s} {bench.script} {' '.join(bench_args)}", flush=True)
        code, seconds = run_one(bench, bench_args, summary, log)
        codes[bench.name] = (code, seconds)
        print(f"{'':10s} exit {code} in {seconds:.0f} s, log {log.relative_to(ROOT)}", flush=True)
    rows = []
    if summary.exists():
        rows = [json.loads(line) for line in summary.read_text(encoding="utf-8").splitlines()]
    text = table(rows, codes)
    head = (
        f"{'quick' if args.quick else 'full'} run, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at the end"
    )
    print(f"\n{head}\n\n{text}")
    (BENCH / "summary.md").write_text(f"{head}\n\n{text}\n", encoding="utf-8")
    (BENCH / "summary.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    failed = [row for row in rows if row["pass"] is False]
    return 1 if failed or any(code for code, _ in codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
