"""The verifier's memory across a run, and its compiled helpers, against the plain walk.

`Collector.collect` walks each distinct top-level element once per run and merges what it
found (`_Part` s) in order; `Output.index` finds every searched form in one compiled pass
(``find_forms``); the element keys come from the compiled ``element_keys``; a place found in a
repeated element is remembered; trees are built lazily. Each is checked here against the
reference it replaces: the collector's values, classes and kept elements against `walk` over
the whole tree, on the corpus, cold and warm, under several rule sets; the compiled helpers
against their pure-Python equivalents on real, mutated and random bytes; lazy places against
places over the eagerly built tree; items the walker cannot follow against pydicom's reading;
and the whole verifier with the pure-Python core against the compiled one.
"""

from __future__ import annotations

import csv
import gc
import json
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest

from dicomflow.anonymize import Deidentifier, DeidOptions, verify
from dicomflow.anonymize import _verify as V
from dicomflow.anonymize import _verify_collect as C
from dicomflow.anonymize import _verify_output as O
from dicomflow.anonymize import _verify_tree as T
from dicomflow.dicom import compiled_core, parse_header
from dicomflow.runtime import fewer_collections
from dicomflow.sample import mutants

from .conftest import SECRET

CORE = compiled_core()
needs_core = pytest.mark.skipif(
    CORE is None, reason="the compiled core is not built (setup.py build_ext --inplace)"
)


def _corpus_paths(corpus: Path, limit: int = 3_000_000) -> list[Path]:
    with open(corpus / "MANIFEST.csv", newline="") as f:
        paths = sorted(corpus / row["path"] for row in csv.DictReader(f))
    return [p for p in paths if p.is_file() and p.stat().st_size <= limit]


def _forget() -> None:
    """Empty every memory of the verifier (a fresh process)."""
    C._MEMOS.clear()
    C._PRESENT.clear()
    C._DECISION_TABLES.clear()
    C._cached_strings.cache_clear()
    O._PLACES.clear()
    O._CODES.clear()
    V._prepared.cache_clear()


def _walked(path: Path, options: DeidOptions, kept: frozenset[str]) -> C.Collector:
    """The reference: `meta` and `walk` over the whole tree."""
    tree = C.source_tree(path)
    collector = C.Collector(tree, options, kept)
    collector.meta()
    collector.walk(tree.elements, (), "", (), C.DEFAULT_CODECS)
    return collector


def _collected(path: Path, options: DeidOptions, kept: frozenset[str]) -> C.Collector:
    collector = C.Collector(C.source_tree(path), options, kept)
    collector.collect()
    return collector


def _summary(collector: C.Collector) -> tuple[list, dict]:
    """The values in order with their classes, the person names as a partition (numbers
    differ between runs, which values share one does not), and the kept elements' values by
    tag path."""
    texts = list(collector.texts())
    numbers: dict[int, int] = {}
    rows = []
    for text in texts:
        v = collector.searched(text)
        names = sorted(numbers.setdefault(n, len(numbers)) for n in sorted(v.names))
        rows.append((text, v.attribute, v.match, v.strong, v.deliberate, v.word, names))
    entries: dict[tuple[int, ...], list] = {k: list(e) for k, e in collector.held.items()}
    for part in collector.parts or ():
        for key, held in part.held.items():
            entries.setdefault(key, []).extend(held)
    held = {}
    for key, found in entries.items():
        values = []
        for data, start, end, vr, decoded, codecs in found:
            if decoded is None:
                decoded = O.raw_values(data[start:end] if start != T.UNKNOWN else None, vr, codecs)
            values.append([str(v) for v in decoded])
        held[key] = values
    return rows, held


RULES = [
    (DeidOptions(), frozenset()),
    (DeidOptions(retain_device_identity=True, retain_safe_private=True), frozenset()),
    (DeidOptions(clean_structured_content=True), frozenset({"StudyDescription", "(0008,1030)"})),
]


@pytest.mark.parametrize("rules", range(len(RULES)))
def test_collect_finds_what_the_walk_finds_cold_and_warm(corpus: Path, rules: int) -> None:
    options, kept = RULES[rules]
    paths = _corpus_paths(corpus)[::3]
    assert len(paths) > 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = []
        for path in paths:
            try:
                expected.append(_summary(_walked(path, options, kept)))
            except T.Unwalkable:
                expected.append(None)
        _forget()
        for rounds in ("cold", "warm"):
            for path, wanted in zip(paths, expected, strict=True):
                if wanted is None:
                    with pytest.raises(T.Unwalkable):
                        _collected(path, options, kept)
                    continue
                assert _summary(_collected(path, options, kept)) == wanted, (rounds, path)
    assert sum(len(w[0]) for w in expected if w) > 3000
    assert sum(len(w[1]) for w in expected if w) > 3000  # kept elements compared


def test_a_series_shares_its_parts(corpus: Path) -> None:
    """The second instance of a series walks only the elements that differ."""
    series = sorted((corpus / "series" / "dcm_qa_ct_ge").glob("*.dcm"))[:3]
    assert len(series) == 3
    _forget()
    made = []
    real = C.Collector._part

    def counting(self, elem, codecs, creators, *, copy):
        made.append(elem.tag if elem is not None else None)
        return real(self, elem, codecs, creators, copy=copy)

    with warnings.catch_warnings(), pytest.MonkeyPatch.context() as patch:
        warnings.simplefilter("ignore")
        patch.setattr(C.Collector, "_part", counting)
        first = _collected(series[0], DeidOptions(), frozenset())
        walked_first = len(made)
        made.clear()
        _collected(series[1], DeidOptions(), frozenset())
    assert walked_first > 50
    assert 0x00080018 in made  # its own SOP Instance UID
    assert len(made) < walked_first / 3
    assert first.parts is not None and len(first.parts) > 50


def test_the_memory_keeps_what_is_met_again() -> None:
    memo = C._Memo()
    parts = [C._Part(n, {}, {}, frozenset()) for n in range(C._MAX_MEMO + 3)]
    for n, part in enumerate(parts):
        memo.put(("k", n), part)
    assert len(memo.recent) == 3  # full: the recent generation became the older one
    assert memo.recent.get(("k", 0)) is None
    assert memo.older(("k", 0)) is parts[0]  # met again: back among the recent
    assert memo.recent[("k", 0)] is parts[0] and ("k", 0) not in memo.older_parts
    assert memo.older(("k", C._MAX_MEMO + 5)) is None


@needs_core
def test_element_keys_equal_the_python_keys(corpus: Path) -> None:
    seeds = [(p.name, p.read_bytes()) for p in _corpus_paths(corpus, 400_000)]
    cases = [data for _, data in seeds] + [m.data for m in mutants(seeds, 400, seed=3)]
    compared = 0
    for data in cases:
        try:
            header = parse_header(data, complete=True)
        except Exception:  # noqa: BLE001 - bytes the scanner refuses have no entries
            continue
        for shift in (0, 1, -3):
            for limit in (0, 16, C._MEMO_BYTES):
                args = (header.data, header.elements, shift, limit)
                assert CORE.element_keys(*args) == C._element_keys_python(*args)
                compared += 1
    assert compared > 1000


@needs_core
def test_element_keys_name_a_private_creator_only_before_its_block() -> None:
    entries = {0x00090010: (b"LO", 0, 4), 0x00091001: (b"LO", 4, 2), 0x00111001: (b"UN", 10, 2)}
    entries[0x00110010] = (b"LO", 12, 4)  # after its element: not its creator yet
    data = b"ACMEhi\xff\xff\xff\xffhiBETA"
    keys = CORE.element_keys(data, entries, 0, 2048)
    assert keys == C._element_keys_python(data, entries, 0, 2048)
    assert keys[1] == (0x00091001, b"LO", False, (b"LO", b"ACME"), b"hi")
    assert keys[2] == (0x00111001, b"UN", True, None, b"hi")  # undefined length before it
    assert CORE.element_keys(data, entries, 0, 3)[0] is None  # longer than the limit


def _found_python(buf: bytes, forms: list[bytes], start: int, end: int, cap: int) -> dict:
    """`find_forms` by bytes.find, region by region (what `Output.search` did)."""
    found: dict = {}
    for form in forms:
        if len(form) < 2 or form in found:
            continue
        offsets = []
        regions = [(0, start), (end, len(buf))]
        if len(form) >= O.BULK_MIN_BYTES:
            regions.insert(1, (start, end))
        for low, high in regions:
            at = buf.find(form, low, high)
            while at != -1:
                offsets.append(at)
                at = buf.find(form, at + 1, high)
        if offsets:
            found[form] = offsets if len(offsets) <= cap else None
    return found


@needs_core
def test_find_forms_equals_a_search_per_form_and_region(corpus: Path) -> None:
    rng = random.Random(7)
    bufs = []
    for path in _corpus_paths(corpus, 300_000)[::4]:
        out = O.Output.of(path)
        bufs.append((out.low, *out.pixels))
    for _ in range(30):  # random and text-like bytes, regions anywhere
        buf = bytes(rng.choice(b"ab01.^ \xff") for _ in range(rng.randrange(0, 3000)))
        start = rng.randrange(0, len(buf) + 1)
        bufs.append((buf, start, rng.randrange(start, len(buf) + 1)))
    checked = 0
    for buf, start, end in bufs:
        forms = [buf[at : at + rng.choice((1, 2, 3, 5, 6, 9, 40))]
                 for at in rng.sample(range(max(len(buf), 1)), min(len(buf), 60))]  # fmt: skip
        forms += [buf[max(start - 3, 0) : start + 4], buf[max(end - 4, 0) : end + 3], b"zz\x00q"]
        forms += [f for f in forms[:5]]  # repeated forms
        for cap in (1, 4, 256):
            got = CORE.find_forms(buf, forms, start, end, O.BULK_MIN_BYTES, cap)
            assert got == _found_python(buf, forms, start, end, cap), (len(buf), start, end)
            checked += len(got)
    assert checked > 3000


def _rows(findings) -> list[tuple]:
    return [(f.attribute, f.value, f.where, f.kind, f.offset) for f in findings]


def test_lazy_places_are_the_places_over_the_whole_tree(corpus: Path) -> None:
    for path in _corpus_paths(corpus, 300_000)[::5]:
        out = O.Output.of(path)
        if not out.tree.walked:
            continue
        tree = out.tree
        try:
            eager = O._Level(tree.elements, tree.start, len(out.data))
        except T.Unwalkable:
            continue
        O._PLACES.clear()
        for offset in range(tree.start, len(out.data), 37):
            assert out.place_at(offset) == O._descend(eager, offset, "", False), (path, offset)
        for offset in range(tree.start, len(out.data), 37):  # remembered now
            assert out.place_at(offset) == O._descend(eager, offset, "", False), (path, offset)


def _with_bad_item(source: Path, target: Path) -> bool:
    """``source`` with the first item tag inside a defined-length sequence broken (the top
    level still walks: the damage shows only when the sequence's items are read)."""
    data = bytearray(source.read_bytes())
    try:
        header = parse_header(bytes(data), complete=True)
    except Exception:  # noqa: BLE001 - not a file the walker reads at all
        return False
    for _, (vr, vpos, length) in header.elements.items():
        if vr == b"SQ" and length >= 16 and data[vpos : vpos + 4] == b"\xfe\xff\x00\xe0":
            data[vpos + 2 : vpos + 4] = b"\x11\x11"
            target.write_bytes(bytes(data))
            return True
    return False


def test_items_the_walker_cannot_follow_are_read_by_pydicom(corpus: Path, tmp_path) -> None:
    paths = [p for p in _corpus_paths(corpus, 300_000) if "series" in p.parts][:40]
    broken = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, path in enumerate(paths):
            bad = tmp_path / f"{n}.dcm"
            if not _with_bad_item(path, bad):
                continue
            tree = T.read_tree(bad.read_bytes())  # the top level walks
            with pytest.raises(T.Unwalkable):
                len(tree.elements)
            source = C.source_tree(bad, walker=False)
            output = O.Output.of(bad, walker=False)
            expected = _rows(V._verified(source, output, "x/1.dcm", None, frozenset()))
            assert expected  # the original as its own output: its values are found
            _forget()
            assert _rows(verify(bad, bad, output_path="x/1.dcm")) == expected
            broken += 1
    assert broken >= 3


_VERIFY_ALL = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from dicomflow.anonymize import verify
from dicomflow.dicom import SCANNER_CORE
assert SCANNER_CORE == sys.argv[1], SCANNER_CORE
rows = []
for original, output in json.loads(sys.argv[2]):
    rows.append([[f.attribute, f.value, f.where, f.kind, f.offset]
                 for f in verify(original, output, output_path="share/x.dcm")])
print(json.dumps(rows))
"""


def _verify_with(core: str, pairs: list[tuple[str, str]]) -> list:
    env = dict(os.environ)
    env.pop("DICOMFLOW_PURE_PYTHON", None)
    if core == "python":
        env["DICOMFLOW_PURE_PYTHON"] = "1"
    done = subprocess.run([sys.executable, "-c", _VERIFY_ALL, core, json.dumps(pairs)],
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@needs_core
def test_the_pure_python_core_verifies_alike(corpus: Path, tmp_path: Path) -> None:
    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n, path in enumerate(_corpus_paths(corpus, 2_000_000)[::6]):
            pairs.append((str(path), str(path)))  # every value found
            try:
                out, _ = Deidentifier(SECRET, DeidOptions()).deidentify(pydicom.dcmread(path))
                out.ImageComments = "planted " + str(pydicom.dcmread(path).get("PatientID", ""))
                target = tmp_path / f"{n}.dcm"
                out.save_as(target, enforce_file_format=True)
            except Exception:  # noqa: BLE001 - what the engine refuses is not a case here
                continue
            pairs.append((str(path), str(target)))
    compiled, python = _verify_with("c", pairs), _verify_with("python", pairs)
    assert sum(map(len, compiled)) > 1000
    assert compiled == python


def test_fewer_collections_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), fewer_collections(before[0] + 1000):
        assert gc.get_threshold()[0] == before[0] + 1000
        raise RuntimeError("a failing batch")
    assert gc.get_threshold() == before
    with fewer_collections(1):  # never lower than the threshold in force
        assert gc.get_threshold() == before
