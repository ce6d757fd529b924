"""Shared helpers for the de-identification tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: ``../shared`` beside the clone (CI and the workspace both have it there).
SHARED = REPO.parent / "shared"
SECRET = b"dicomflow test secret, 32 bytes!"
OTHER_SECRET = b"another secret for the same data"


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (expected beside the clone)")
    return SHARED
