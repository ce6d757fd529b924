"""Shared test fixtures: where the real-data corpus lives, and small generated files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DICOMFLOW_SHARED", REPO.parent / "shared"))
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The public DICOM corpus (``../shared/corpus`` beside the checkout)."""
    if not (CORPUS / "MANIFEST.csv").exists():
        pytest.fail(f"the DICOM corpus is missing at {CORPUS}; set DICOMFLOW_SHARED")
    return CORPUS
