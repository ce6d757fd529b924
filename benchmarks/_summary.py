"""Figures for the one table of ``make bench`` (``benchmarks/run_all.py``).

A benchmark calls :func:`record` where it prints a figure that has a target or a contender. When
``run_all.py`` runs it, the environment names a file and each call appends one JSON line to it;
run alone, the call does nothing, so every benchmark prints exactly what it printed before.
"""

from __future__ import annotations

import json
import os

ENV = "DICOMFLOW_BENCH_SUMMARY"


def record(
    bench: str,
    measure: str,
    value: float,
    *,
    target: float | None = None,
    lower_is_better: bool = False,
    unit: str = "x",
    against: str = "",
) -> None:
    """Append one figure: ``value`` (``unit``) of ``measure``, against ``target`` when given.

    ``against`` names the contender a ratio divides by (``"pydicom loop"``, ``"dcm2niix"``).
    With ``lower_is_better`` the target is a ceiling (a time ratio, a latency), otherwise a floor.
    """
    path = os.environ.get(ENV)
    if not path:
        return
    verdict = None
    if target is not None:
        verdict = value <= target if lower_is_better else value >= target
    row = {
        "bench": bench,
        "measure": measure,
        "value": float(value),
        "unit": unit,
        "target": target,
        "lower_is_better": lower_is_better,
        "against": against,
        "pass": verdict,
    }
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps(row) + "\n")
