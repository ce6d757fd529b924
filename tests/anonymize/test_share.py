"""De-identifying the built-in sample for sharing, end to end, on every executor.

The sample archive (``make_sample``) plants identifying values where tools are known to miss
them; after a run none of them may be left in any output byte or path, the verifier must find
nothing, the secret must appear nowhere, and the outputs must be byte-identical whether the run
was in process, in a process pool or on a dask cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dicomflow as dfl
from dicomflow.anonymize import Deidentify, verify_folders
from dicomflow.dicom import encode_part10

from .conftest import SECRET

OPTIONS = ["retain-safe-private", "clean-descriptors"]


def _run(sample, root: Path, **execute) -> dfl.RunReport:
    stage = Deidentify(secret=SECRET, options=OPTIONS)
    job = (dfl.pipeline(dfl.scan(str(sample.root), workers=1)) | stage).write(
        dfl.writers.Part10Folder(str(root / "share"))
    )
    return job.execute(manifest=str(root / "manifests"), **execute)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def shared(sample_archive, tmp_path_factory):
    root = tmp_path_factory.mktemp("share-1w")
    report = _run(sample_archive, root, workers=1)
    return sample_archive, root, report


def test_every_input_accounted_for(shared) -> None:
    sample, _, report = shared
    assert report.done == len(sample.files)
    assert report.failed == len(sample.broken)  # the three broken files, failed at the scan
    counts = [r["counts"] for r in report.manifest.to_pylist() if r["status"] == "done"]
    assert all('"deid.X"' in c for c in counts)


def test_no_planted_value_in_output_bytes_or_paths(shared) -> None:
    sample, root, _ = shared
    tree = _tree(root / "share")
    blob = b"\0".join(tree.values())
    paths = "\n".join(tree).casefold()
    for key, value in sample.planted.items():
        for codec in ("utf-8", "latin-1"):
            try:
                form = value.encode(codec)
            except UnicodeEncodeError:
                continue
            assert form not in blob, f"{key} ({codec}) left in the outputs"
        assert value.casefold() not in paths, f"{key} left in an output path"
        for part in value.replace("^", " ").split():
            if len(part) >= 4 and not part.isdigit():
                assert part.casefold() not in paths, f"part of {key} in an output path"


def test_modified_dates_keep_only_times_of_day(sample_archive) -> None:
    """With Modified Dates, times of day stay (whole-day shifts); every other value goes."""
    stage = Deidentify(secret=SECRET, options=["retain-longitudinal-modified-dates"])
    blob = b"".join(
        encode_part10(stage(dfl.Instance(str(path))).dataset) for path in sample_archive.files[::12]
    )
    kept = {key for key, value in sample_archive.planted.items() if value.encode() in blob}
    assert kept and all(key.endswith(("StudyTime",)) for key in kept), kept


def test_verifier_finds_nothing(shared) -> None:
    sample, root, _ = shared
    report = verify_folders(sample.root, root / "share", manifest=root / "manifests")
    assert report.paired_by == "manifest"
    assert report.pairs == len(sample.files)
    assert report.findings == () and report.problems == ()


def test_secret_is_nowhere(shared) -> None:
    _, root, _ = shared
    forms = [SECRET, SECRET.hex().encode(), SECRET.decode().upper().encode()]
    for name, data in _tree(root).items():  # the shared outputs and the manifest
        assert not any(form in data for form in forms), name


def test_same_bytes_in_a_process_pool(shared, tmp_path) -> None:
    sample, root, _ = shared
    _run(sample, tmp_path, workers=2)
    assert _tree(tmp_path / "share") == _tree(root / "share")


def test_same_bytes_on_a_dask_cluster(shared, tmp_path, dask_client) -> None:
    sample, root, _ = shared
    report = _run(sample, tmp_path, client=dask_client)
    assert report.done == len(sample.files)
    assert _tree(tmp_path / "share") == _tree(root / "share")


def test_same_bytes_in_a_second_run_elsewhere(shared, tmp_path) -> None:
    sample, root, _ = shared
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)  # nothing depends on where the run starts
        _run(sample, tmp_path, workers=1)
    finally:
        os.chdir(cwd)
    assert _tree(tmp_path / "share") == _tree(root / "share")
