"""Atomic writes (:func:`dicomflow.dicom.atomic_write`): never a partial file under the final
name, never an overwrite, no temporary file left behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from dicomflow.dicom import TMP_SUFFIX, CollisionError, _files, atomic_write


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(TMP_SUFFIX)]


def test_a_missing_folder_is_made(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "x.dcm"
    atomic_write(str(path), b"data", fsync=False)
    assert path.read_bytes() == b"data"
    assert _temporaries(tmp_path) == []


def test_the_same_bytes_again_are_fine_other_bytes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    atomic_write(str(path), b"one")
    atomic_write(str(path), b"one", fsync=False)
    with pytest.raises(CollisionError):
        atomic_write(str(path), b"two", fsync=False)
    assert path.read_bytes() == b"one"
    assert _temporaries(tmp_path) == []


def test_a_temporary_name_in_use_is_left_alone(tmp_path: Path, monkeypatch) -> None:
    """Another writer's temporary file under the name this one drew is never truncated."""
    monkeypatch.setattr(_files, "temporary_token", lambda: "same")
    theirs = tmp_path / f".x.dcm.same{TMP_SUFFIX}"
    theirs.write_bytes(b"another writer's bytes")
    atomic_write(str(tmp_path / "x.dcm"), b"mine", fsync=False)
    assert (tmp_path / "x.dcm").read_bytes() == b"mine"
    assert theirs.read_bytes() == b"another writer's bytes"
    assert _temporaries(tmp_path) == [theirs]


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="fork")
def test_a_forked_child_draws_other_temporary_names() -> None:
    _files.temporary_token()  # this process has its prefix and counter
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next name, to the parent
        try:
            os.write(write, _files.temporary_token().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    mine = _files.temporary_token()
    assert child.endswith("0")  # the child's first name: a counter of its own, from 0
    assert not mine.startswith(child[:-1])  # and a prefix of its own
