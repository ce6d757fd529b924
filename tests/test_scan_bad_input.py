"""Bad input never stops a scan: every file is one row, bad ones carry a clear error."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dicomflow as dfl
from dicomflow.dicom import NeedMore, parse_header


@pytest.fixture
def good_file(corpus: Path) -> Path:
    return (
        corpus
        / "transfer-syntax"
        / "explicit-vr-le"
        / sorted(os.listdir(corpus / "transfer-syntax" / "explicit-vr-le"))[0]
    )


def test_a_folder_of_bad_files(tmp_path: Path, good_file: Path) -> None:
    data = good_file.read_bytes()
    (tmp_path / "good.dcm").write_bytes(data)
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("this is not DICOM\n" * 20)
    (tmp_path / "cut-in-header.dcm").write_bytes(data[:300])
    (tmp_path / "only-preamble.dcm").write_bytes(b"\x00" * 128 + b"DICM")
    (tmp_path / "dangling.dcm").symlink_to(tmp_path / "does-not-exist.dcm")
    (tmp_path / "random.bin").write_bytes(random.Random(0).randbytes(5000))
    cat = dfl.scan(tmp_path, workers=1)
    rows = {Path(r["uri"]).name: r for r in cat.to_arrow().to_pylist()}
    assert set(rows) == {
        "good.dcm", "empty.dcm", "notes.txt", "cut-in-header.dcm", "only-preamble.dcm",
        "dangling.dcm", "random.bin",
    }  # fmt: skip
    assert rows["good.dcm"]["error"] is None
    assert "empty file" in rows["empty.dcm"]["error"]
    assert "not a DICOM file" in rows["notes.txt"]["error"]
    assert "truncated" in rows["cut-in-header.dcm"]["error"]
    assert rows["only-preamble.dcm"]["error"]
    assert "file not found" in rows["dangling.dcm"]["error"]
    assert rows["random.bin"]["error"]
    assert cat.stats.files == 7 and cat.stats.errors == 6


def test_header_longer_than_the_first_read_is_grown(good_file: Path) -> None:
    data = good_file.read_bytes()
    with pytest.raises(NeedMore) as more:
        parse_header(data[:200], complete=False)
    assert more.value.needed > 200
    full = parse_header(data, complete=True)
    small = dfl.scan(good_file, workers=1, prefix=256).to_arrow()
    large = dfl.scan(good_file, workers=1).to_arrow()
    assert small.equals(large)
    assert small["pixel_offset"][0].as_py() == full.pixel_offset


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise(data: bytes) -> None:
    for complete in (True, False):
        try:
            parse_header(data, complete=complete)
        except (dfl.InvalidDicomError, NeedMore):
            pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_real_headers_never_raise(corpus: Path, data) -> None:
    files = sorted((corpus / "transfer-syntax").rglob("*.dcm"))
    path = data.draw(st.sampled_from(files[:40]))
    raw = bytearray(path.read_bytes()[:4096])
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    try:
        parse_header(bytes(raw[:cut]), complete=True)
    except dfl.InvalidDicomError:
        pass


def test_corrupted_files_each_give_one_row(tmp_path: Path, corpus: Path) -> None:
    rng = random.Random(7)
    sources = sorted((corpus / "transfer-syntax").rglob("*.dcm"))[:30]
    for i, src in enumerate(sources):
        raw = bytearray(src.read_bytes())
        for _ in range(20):
            raw[rng.randrange(min(len(raw), 3000))] = rng.randrange(256)
        (tmp_path / f"{i:03d}.dcm").write_bytes(bytes(raw[: rng.randrange(100, len(raw) + 1)]))
    table = dfl.scan(tmp_path, workers=2, batch_size=8).to_arrow()
    assert table.num_rows == len(sources)
    assert sorted(Path(u).name for u in table["uri"].to_pylist()) == [
        f"{i:03d}.dcm" for i in range(len(sources))
    ]
