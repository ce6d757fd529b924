"""Shared test fixtures: where the real-data corpus lives, and small generated files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DICOMFLOW_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def dask_client():
    """A real dask.distributed cluster of 2 worker processes on loopback, shared by the tests.

    Not the default client: only tests that pass it explicitly run on it.
    """
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        client.wait_for_workers(2, timeout=60)
        yield client


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The public DICOM corpus (``../shared/corpus`` beside the checkout)."""
    if not (CORPUS / "MANIFEST.csv").exists():
        pytest.fail(f"the DICOM corpus is missing at {CORPUS}; set DICOMFLOW_SHARED")
    return CORPUS
