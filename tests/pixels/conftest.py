"""Catalog rows for the pixel tests, built by ``dicomflow.scan`` over corpus files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pyarrow as pa
import pytest

from dicomflow import scan

CORPUS = Path(
    os.environ.get(
        "DICOMFLOW_CORPUS",
        Path(os.environ.get("DICOMFLOW_SHARED", Path(__file__).resolve().parents[3] / "shared"))
        / "corpus",
    )
)


def catalog_row(path: str | Path) -> dict:
    """One catalog row for ``path``."""
    return catalog_table([path]).to_pylist()[0]


def catalog_table(paths) -> pa.Table:
    """The catalog of ``paths``, in the caller's order."""
    paths = [str(p) for p in paths]
    table = scan(paths, workers=1).to_arrow()
    order = {p: i for i, p in enumerate(paths)}
    index = sorted(range(table.num_rows), key=lambda i: order.get(table["uri"][i].as_py(), i))
    return table.take(index)


def manifest() -> list[dict]:
    """The corpus MANIFEST rows."""
    with open(CORPUS / "MANIFEST.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "MANIFEST.csv").is_file():
        pytest.fail(f"the shared corpus is missing at {CORPUS}; set DICOMFLOW_SHARED")
    return CORPUS


@pytest.fixture(scope="session")
def catalog_of():
    """A function: paths -> catalog Arrow table."""
    return catalog_table
