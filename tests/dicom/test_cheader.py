"""The compiled scanner core (dicomflow/dicom/_cheader.c) against the pure-Python scanner.

The pure-Python ``walk`` and column converters are the reference: the compiled ones must give
the same elements, the same values and the same exceptions (class, message, ``needed``) on
real files, on real files cut at every byte, on crafted and on random bytes, and whole scans of
the corpus and of the fuzz mutants must write equal catalogs with either core.
"""

from __future__ import annotations

import csv
import os
import random
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomflow.dicom import (
    LONG_VRS,
    MAX_NESTING,
    ColumnSpec,
    ParsedHeader,
    _header,
    _values,
    column_array,
    parse_header,
)
from dicomflow.sample import mutants

compiled = _header._compiled
if compiled is None and os.environ.get("CI"):
    # a fresh machine builds it during `pip install` (gcc, the Python headers); on CI a missing
    # core is a broken install, not ~155 quietly skipped tests
    pytest.fail("CI: the compiled scanner core was not built (is gcc or python3-dev missing?)",
                pytrace=False)  # fmt: skip
pytestmark = pytest.mark.skipif(
    compiled is None, reason="the compiled core is not built (setup.py build_ext --inplace)"
)

_SCAN = r"""
import sys, warnings
warnings.simplefilter("ignore")
import dicomflow as dfl
from dicomflow.dicom import SCANNER_CORE
assert SCANNER_CORE == sys.argv[4], SCANNER_CORE
dfl.scan(sys.argv[1], workers=1, columns=sys.argv[3], header="json").to_parquet(sys.argv[2])
"""


def _scan(folder: Path, out: Path, columns: str, core: str) -> Any:
    env = dict(os.environ)
    env.pop("DICOMFLOW_PURE_PYTHON", None)
    if core == "python":
        env["DICOMFLOW_PURE_PYTHON"] = "1"
    done = subprocess.run(
        [sys.executable, "-c", _SCAN, str(folder), str(out), columns, core],
        capture_output=True, text=True, timeout=1200, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return pq.read_table(out)


def _assert_same_catalogs(folder: Path, tmp_path: Path, columns: str) -> None:
    c = _scan(folder, tmp_path / "c.parquet", columns, "c")
    py = _scan(folder, tmp_path / "python.parquet", columns, "python")
    assert c.schema == py.schema
    assert c.num_rows == py.num_rows > 0
    for name in c.column_names:
        left, right = c.column(name).to_pylist(), py.column(name).to_pylist()
        diff = [(i, a, b) for i, (a, b) in enumerate(zip(left, right)) if repr(a) != repr(b)]
        assert not diff, (name, diff[:5])


@pytest.mark.parametrize("columns", ["default", "all"])
def test_the_corpus_scans_to_the_same_catalog_with_either_core(
    corpus: Path, tmp_path: Path, columns: str
) -> None:
    _assert_same_catalogs(corpus, tmp_path, columns)


def test_fuzz_mutants_scan_to_the_same_catalog_with_either_core(
    corpus: Path, tmp_path: Path
) -> None:
    with open(corpus / "MANIFEST.csv", newline="") as f:
        paths = [corpus / row["path"] for row in csv.DictReader(f)]
    seeds = [(str(p), p.read_bytes()) for p in paths if p.stat().st_size <= 2_000_000]
    folder = tmp_path / "mutants"
    folder.mkdir()
    for m in mutants(seeds, 600, seed=17):
        (folder / m.name).write_bytes(m.data)
    _assert_same_catalogs(folder, tmp_path, "all")


# --------------------------------------------------------------------------------------------
# walk, element by element


def _outcome(fn: Any, buf: bytes, pos: int, little: bool, implicit: bool, top: bool = True,
             depth: int = 0) -> tuple:  # fmt: skip
    out: dict = {}
    try:
        result = fn(buf, pos, little, implicit, out, top, depth)
    except Exception as exc:  # noqa: BLE001 - the exception is what is compared
        return ("raised", type(exc), str(exc), getattr(exc, "needed", None), out)
    return ("returned", result, out)


def _same(buf: bytes, pos: int, little: bool, implicit: bool, top: bool = True,
          depth: int = 0) -> tuple:  # fmt: skip
    expected = _outcome(_header._walk_python, buf, pos, little, implicit, top, depth)
    got = _outcome(compiled.walk, buf, pos, little, implicit, top, depth)
    assert got == expected, (len(buf), pos, little, implicit, top)
    return got


def _dataset_start(data: bytes) -> tuple[int, bool, bool, int] | None:
    """Where the dataset of a real file begins, its encoding, and where its header ends."""
    try:
        header = parse_header(data, complete=True)
    except Exception:  # noqa: BLE001 - files the scanner refuses have no dataset to walk
        return None
    if header.data is not data or not header.elements:
        return None
    vr, vpos, _ = next(iter(header.elements.values()))
    start = vpos - (12 if not header.implicit and vr in LONG_VRS else 8)
    return start, header.little, header.implicit, header.header_end


def _corpus_files(corpus: Path, limit: int) -> list[bytes]:
    with open(corpus / "MANIFEST.csv", newline="") as f:
        paths = sorted(corpus / row["path"] for row in csv.DictReader(f))
    files = [p.read_bytes() for p in paths if p.stat().st_size <= limit]
    return [d for d in files if _dataset_start(d) is not None]


def test_walk_equals_on_every_real_file_and_every_encoding(corpus: Path) -> None:
    files = _corpus_files(corpus, 5_000_000)
    assert len(files) > 100
    outcomes = set()
    for data in files:
        start, little, implicit, _ = _dataset_start(data)  # type: ignore[misc]
        outcomes.add(_same(data, start, little, implicit)[0])
        for lit in (True, False):  # the wrong encoding too: garbage the walk must refuse
            for imp in (True, False):
                _same(data, start, lit, imp)
                _same(data, 0, lit, imp, top=False)
    assert outcomes == {"returned", "raised"}  # complete files and a truncated one


def test_walk_equals_on_real_headers_cut_at_every_byte(corpus: Path) -> None:
    rng = random.Random(5)
    files = [d for d in _corpus_files(corpus, 200_000) if _dataset_start(d)[3] <= 6000]  # type: ignore[index]
    chosen = rng.sample(files, 12)
    needed = set()
    for data in chosen:
        start, little, implicit, end = _dataset_start(data)  # type: ignore[misc]
        for cut in range(start, min(end + 40, len(data)) + 1):
            got = _same(data[:cut], start, little, implicit)
            if got[0] == "raised":
                needed.add(got[3] is not None)
    assert True in needed  # NeedMore offsets were compared, not only complete walks


def _parse_outcome(data: bytes, complete: bool) -> tuple:
    try:
        h = parse_header(data, complete=complete)
    except Exception as exc:  # noqa: BLE001 - the exception is what is compared
        return ("raised", type(exc), str(exc), getattr(exc, "needed", None))
    return ("parsed", h.elements, h.meta, h.pixel, h.header_end, h.error, h.notes, h.implicit)


def test_parse_header_says_the_same_on_every_prefix_of_real_files(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a scan sees while it reads a file prefix by prefix: NeedMore and its ``needed``."""
    rng = random.Random(11)
    files = rng.sample(_corpus_files(corpus, 60_000), 8)
    outcomes: dict[str, list] = {"c": [], "python": []}
    for core in ("c", "python"):
        if core == "python":
            monkeypatch.setattr(_header, "walk", _header._walk_python)
            monkeypatch.setattr(_header, "_parse_meta", _header._parse_meta_python)
        for data in files:
            end = min(_dataset_start(data)[3] + 40, len(data))  # type: ignore[index]
            for cut in range(0, end + 1, 3):
                outcomes[core].append(_parse_outcome(data[:cut], cut == len(data)))
            outcomes[core].append(_parse_outcome(data, True))
    assert outcomes["c"] == outcomes["python"]
    kinds = {o[0] for o in outcomes["c"]} | {
        o[1].__name__ for o in outcomes["c"] if o[0] == "raised"
    }
    assert {"parsed", "raised", "NeedMore"} <= kinds


def _el(tag: int, vr: bytes | None, value: bytes, little: bool = True,
        length: int | None = None) -> bytes:  # fmt: skip
    e = "<" if little else ">"
    head = struct.pack(e + "HH", tag >> 16, tag & 0xFFFF)
    size = len(value) if length is None else length
    if vr is None:
        return head + struct.pack(e + "L", size) + value
    if vr in LONG_VRS:
        return head + vr + b"\0\0" + struct.pack(e + "L", size) + value
    return head + vr + struct.pack(e + "H", size) + value


_ITEM = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQ_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)


def _nested(levels: int) -> bytes:
    body = _el(0x00100010, b"PN", b"Doe^J ")
    for _ in range(levels):
        body = _el(0x0040A730, b"SQ", b"", length=0xFFFFFFFF) + _ITEM + body + _ITEM_END + _SEQ_END
    return body


CRAFTED = {
    "plain": _el(0x00080060, b"CS", b"CT") + _el(0x00100010, b"PN", b"Doe^Jane"),
    "pixel data stop": _el(0x00080060, b"CS", b"MR") + _el(0x7FE00010, b"OW", b"\1\2\3\4"),
    "float pixel data": _el(0x7FE00008, b"OF", b"\0" * 8),
    "undefined pixel": _el(0x7FE00010, b"OB", b"", length=0xFFFFFFFF),
    "stray item": struct.pack("<HHL", 0xFFFE, 0xE000, 4) + b"abcd" + _el(0x00080060, b"CS", b"CT"),
    "stray item past the end": struct.pack("<HHL", 0xFFFE, 0xE000, 40) + b"abcd",
    "stray undefined item": _ITEM + _el(0x00080060, b"CS", b"CT"),
    "item end at top": _ITEM_END + _el(0x00080060, b"CS", b"CT"),
    "sequence end at top": _SEQ_END,
    "unknown VR": _el(0x00091001, b"XY", b"abcd") + _el(0x00100020, b"LO", b"ID"),
    "lower-case VR": _el(0x00091001, b"xy", b"abcd") + _el(0x00100020, b"LO", b"ID"),
    "VR B\\0": _el(0x00091001, b"B\0", b"abcd"),
    "VR Z[": _el(0x00091001, b"Z[", b"abcd"),
    "implicit inside explicit": _el(0x00091001, None, b"abcd") + _el(0x00100020, b"LO", b"I"),
    "nested": _nested(5),
    "nested to the bound": _nested(MAX_NESTING),
    "nested past the bound": _nested(MAX_NESTING + 1),
    "UN sequence": _el(0x00091010, b"UN", b"", length=0xFFFFFFFF)
    + _ITEM
    + _el(0x00100010, None, b"Doe^J ")
    + _ITEM_END
    + _SEQ_END
    + _el(0x00100020, b"LO", b"ID"),
    "defined items in undefined sequence": _el(0x00081115, b"SQ", b"", length=0xFFFFFFFF)
    + struct.pack("<HHL", 0xFFFE, 0xE000, 4)
    + b"wxyz"
    + _SEQ_END,
    "not an item in a sequence": _el(0x00081115, b"SQ", b"", length=0xFFFFFFFF)
    + _el(0x00100010, b"PN", b"x "),
    "item end where an item should be": _el(0x00081115, b"SQ", b"", length=0xFFFFFFFF) + _ITEM_END,
    "value past the end": _el(0x00100010, b"PN", b"Doe", length=400),
    "long VR header cut": _el(0x00080060, b"CS", b"CT") + b"\x10\x00\x10\x00OB\0\0",
    "huge length": _el(0x00100010, b"UT", b"x", length=0xFFFFFFFE),
    "empty": b"",
    "seven bytes": b"\x08\x00\x60\x00CS\x02",
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("top", [True, False])
def test_walk_equals_on_crafted_buffers(name: str, implicit: bool, top: bool) -> None:
    buf = CRAFTED[name]
    for cut in range(len(buf) + 1):
        _same(buf[:cut], 0, True, implicit, top)
    _same(bytearray(buf), 0, True, implicit, top)  # the deflated reader walks a bytearray
    _same(buf, 0, False, implicit, top)


def test_the_nesting_bound_and_the_pixel_stop_are_compiled_too() -> None:
    refused = _same(CRAFTED["nested past the bound"], 0, True, False)
    assert refused[0] == "raised" and "nested more than 64 levels" in refused[2]
    stop = _same(CRAFTED["pixel data stop"], 0, True, False)
    assert stop[0] == "returned" and stop[1][1][0] == 0x7FE00010
    assert _same(CRAFTED["nested to the bound"], 0, True, False)[0] == "raised"  # the end
    assert _same(CRAFTED["nested to the bound"], 0, True, False, depth=1)[2].startswith("seq")


def test_walk_equals_on_big_endian_elements() -> None:
    buf = (
        _el(0x00080060, b"CS", b"CT", little=False)
        + _el(0x00280010, b"US", b"\x02\x00", little=False)
        + _el(0x00091001, b"OB", b"abcd", little=False)
        + _el(0x7FE00010, b"OW", b"\1\2", little=False)
    )
    got = _same(buf, 0, False, False)
    assert got[0] == "returned" and len(got[2]) == 3
    for cut in range(len(buf)):
        _same(buf[:cut], 0, False, False)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 64))
def test_walk_equals_on_random_bytes(
    buf: bytes, little: bool, implicit: bool, top: bool, depth: int
) -> None:
    _same(buf, 0, little, implicit, top, depth)


DAMAGED = [
    "media/pydicom-dicomdirtests/DICOMDIR-implicit",  # implicit VR, long sequences
    "modality/RTDOSE/rtdose.dcm",  # implicit VR, nested sequences
    "transfer-syntax/explicit-vr-be/MR_small_bigendian.dcm",
]


@pytest.mark.parametrize("name", DAMAGED)
@settings(max_examples=150, deadline=None)
@given(damage=st.lists(st.tuples(st.integers(0, 8_000), st.integers(0, 255)), max_size=6))
def test_walk_equals_on_damaged_headers(
    corpus: Path, name: str, damage: list[tuple[int, int]]
) -> None:
    data = bytearray((corpus / name).read_bytes())
    start, little, implicit, _ = _dataset_start(bytes(data))  # type: ignore[misc]
    for offset, byte in damage:
        if start + offset < len(data):
            data[start + offset] = byte
    _same(bytes(data), start, little, implicit)


# --------------------------------------------------------------------------------------------
# column conversion


def _header_with(elements: dict[int, tuple[bytes | None, bytes]], little: bool = True,
                 cut: int = 0) -> Any:  # fmt: skip
    data = b""
    found = {}
    for tag, (vr, value) in elements.items():
        found[tag] = (vr, len(data), len(value))
        data += value
    return ParsedHeader(data[: len(data) - cut], little, False, None, {}, found, 0, len(data))


VALUES = [
    b"", b"ABC", b"ABC ", b"ABC\0", b"  ABC  ", b"A\\B", b"A\\B ", b"\\", b"\\\\", b"caf\xe9",
    b"\x1b$B", b"Doe^Jane=Y", b"Doe^Jane ", b"1.5", b" 1.5 ", b"1e3", b"nan", b"-inf", b"1_0",
    b"1.5\\2.5", b"1\\x", b"12", b"+12", b"-0", b"012", b"1.0", b"12\0", b" 7 ", b"\\3",
    b"20240229", b"20230229", b"00000101", b"2024.01.01", b"2024013", b"20241301",
    b"120000", b"12:00:00", b"1200.5", b"99", b"\x01\x00", b"\xff\xff", b"\x00\x80",
    b"\x01\x02\x03\x04", b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"\x01\x02\x03",
    b"\x01" * 8, b"\xff" * 8, b"1" * 30, b"9" * 5000, b"1.5e400", b"-1.5E-3", b"1e", b".5",
    b"20240101120000.123456+0100", b"2024", b"202401", b"20240101 ", b"2024-01", b"2024+",
    b"20240101120060", b"20240101126000", b"20240101250000", b" 120000.5 ", b"12.", b"1200.5.5",
    b"250000", b"126000", b"12 00", b"120000\0", b"2024010112\0\0", b"20240101.5", b"\t120000",
    b"20240101.5x", b"20240101.", b"120000.1234567", b"12:30", b"\xb2\xb2", b"A \\ B\0",
    b"caf\xe9\\x", b"-12", b"+-1", b"1-", b"99999999999999999", b"-999999999999999999",
    b" 1.25 ", b"1.25  ", b"  -7 ", b" 1 2 ", b"\t1.5", b"1.5\n", b" ", b" + ", b"1.25 \\ 2.5 ",
    b"999999999999999999", b" 0012 ", b"1_000",
]  # fmt: skip

#: every (VR, multi-valued) pair with a fast converter, and a few without one
COLUMN_KINDS = [
    ("SH", False), ("LO", False), ("UC", False), ("ST", False), ("LT", False), ("UT", False),
    ("PN", False), ("CS", False), ("UI", False), ("AS", False), ("DS", False), ("IS", False),
    ("DA", False), ("TM", False), ("US", False), ("UL", False), ("UV", False), ("SS", False),
    ("SL", False), ("SV", False), ("CS", True), ("DS", True), ("IS", True),
    ("LO", True), ("SH", True), ("UC", True), ("DT", False),
    ("US", True), ("AT", True), ("US or SS", False), ("FD", False), ("PN", True),
]  # fmt: skip


@pytest.mark.parametrize(("vr", "multi"), COLUMN_KINDS)
def test_column_values_equal_the_pure_python_converters(vr: str, multi: bool) -> None:
    spec = ColumnSpec("Column", 0x00291010, vr, multi)
    fast, size = _values._fast_converter(spec)
    kind = _values._KINDS.get(fast) if fast is not None else None
    assert (kind is None) == (fast is None)
    headers: list[Any] = [None, _header_with({})]
    for value in VALUES:
        for actual in (vr.encode(), None, b"UN", b"LO", b"US"):
            for little in (True, False):
                headers.append(_header_with({spec.tag: (actual, value)}, little))
                headers.append(_header_with({spec.tag: (actual, value + b"XY")}, little, cut=2))
    encodings = [("iso8859",)] * len(headers)
    expected = _values._python_values(spec, headers, encodings, fast, size)
    if kind is not None:
        got = _values._compiled_values(spec, headers, encodings, kind, fast, size)  # type: ignore[arg-type]
        differ = [(i, a, b) for i, (a, b) in enumerate(zip(got, expected)) if repr(a) != repr(b)]
        assert len(got) == len(expected) and not differ, differ[:5]
        assert [type(v) for v in got] == [type(v) for v in expected]
    column = column_array(spec, headers, encodings)  # what a scan calls, with the compiled core
    typed = [_values._coerce(v, spec.arrow_type) for v in expected]
    assert repr(column.to_pylist()) == repr(_values.pa.array(typed, spec.arrow_type).to_pylist())


@pytest.mark.parametrize(("vr", "multi"), [("DT", False), ("LO", True), ("SH", True), ("UC", True)])
def test_the_new_fast_converters_equal_the_general_path(vr: str, multi: bool) -> None:
    """DT and multi-valued SH/LO/UC had no fast converter: both cores' now equal the old path."""
    spec = ColumnSpec("Column", 0x00291010, vr, multi)
    fast, _ = _values._fast_converter(spec)
    assert fast is not None
    taken = 0
    for value in VALUES:
        if not value:
            continue  # column_array takes the general path for an empty value
        got = fast(value)
        if got is not _values._SLOW:
            taken += 1
            header = _header_with({spec.tag: (vr.encode(), value)})
            general = _values._python_value(spec, header, spec.tag, ("iso8859",))
            assert repr(got) == repr(general), value
    assert taken > len(VALUES) // 2


def test_file_meta_parsing_equals_on_real_files_cut_at_every_byte(corpus: Path) -> None:
    files = [d for d in _corpus_files(corpus, 100_000) if d[128:132] == b"DICM"][:40]
    assert files
    for data in files:
        for cut in range(128, 700):
            results = []
            for fn in (_header._parse_meta_python, compiled.parse_meta):
                try:
                    results.append(fn(data[:cut], 132))
                except Exception as exc:  # noqa: BLE001 - the exception is what is compared
                    results.append((type(exc), str(exc), getattr(exc, "needed", None)))
            assert results[0] == results[1], cut
        assert compiled.parse_meta(data, 132) == _header._parse_meta_python(data, 132)
    bad = bytearray(files[0])
    bad[136:138] = b"\x00\x01"  # not a VR
    with pytest.raises(_header.Unsupported, match="not explicit VR little endian"):
        compiled.parse_meta(bytes(bad), 132)


def test_every_fast_converter_has_a_compiled_kind() -> None:
    converters = set(_values._FAST_SCALAR.values()) | set(_values._FAST_MULTI.values())
    converters |= {_values._fast_signed, _values._fast_unsigned}
    assert converters <= set(_values._KINDS)
