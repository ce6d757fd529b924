"""Shared helpers for the de-identification tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: ``../shared`` beside the clone (CI and the workspace both have it there), or
#: ``$DICOMFLOW_SHARED`` (a worktree elsewhere), as in ``tests/conftest.py``.
SHARED = Path(os.environ.get("DICOMFLOW_SHARED", REPO.parent / "shared"))
SECRET = b"dicomflow test secret, 32 bytes!"
OTHER_SECRET = b"another secret for the same data"


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED} (expected beside the clone)")
    return SHARED


@pytest.fixture(scope="session")
def sample_archive(tmp_path_factory: pytest.TempPathFactory):
    """The built-in sample archive (``make_sample``), written once per test process."""
    from dicomflow.sample import make_sample

    return make_sample(tmp_path_factory.mktemp("sample") / "archive")


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    """A project secret in a file, as ``dicomflow deid --secret-file`` reads it."""
    path = tmp_path / "private" / "project.key"
    path.parent.mkdir()
    path.write_bytes(SECRET + b"\n")
    return path
