"""The verifier's shortcuts find exactly what the exhaustive search finds.

`verify` settles most values with one pass over the output's bytes (a value nowhere in them is
not searched attribute by attribute) and caches, across the files of a run, the policy's
decisions, the searchable strings of repeated values, the forms of each value and the VRs of the
tags seen. These tests run the exhaustive search (every value of the original through
`_Search.run`, caches emptied first, as the verifier did before the shortcuts) beside `verify`
on outputs made from the corpus (every character set, modalities, multi-frame, encapsulated
pixel data), on the originals themselves (every value found: kept and leaked ones placed), and
on values planted into kept attributes, private blocks and the file name, and require the
same findings, in the same order, warm or cold caches alike.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pydicom
import pytest

from dicomflow.anonymize import Deidentifier, DeidOptions, verify
from dicomflow.anonymize import _verify as V
from dicomflow.anonymize import _verify_collect as C
from dicomflow.anonymize import _verify_output as O
from dicomflow.anonymize import _verify_tree as T

from .conftest import SECRET

#: Corpus folders sampled (a few files each, the character sets all of them).
FOLDERS = {"charsets": 40, "modality": 3, "multiframe": 3, "encapsulation": 4, "series": 2}


def _clear_caches() -> None:
    C._cached_strings.cache_clear()
    C._classes.cache_clear()
    C._DECISION_TABLES.clear()
    C._MEMOS.clear()
    C._PRESENT.clear()
    O._PLACES.clear()
    O._CODES.clear()
    T._VRS.clear()
    V._prepared.cache_clear()
    V._ignored.cache_clear()
    V._coded_forms.cache_clear()
    V._options_of.cache_clear()


def _exhaustive(original: Path, output: Path, shown: str, kept: frozenset[str] = frozenset()):
    """`verify` as it was before its shortcuts: every value searched, one by one."""
    _clear_caches()
    source = C.source_tree(original)
    out = O.Output.of(output)
    collector = C.Collector(source, V._recorded_options(out.method_codes()), kept)
    collector.meta()
    collector.walk(source.elements, (), "", (), C.DEFAULT_CODECS)
    codecs = C.codecs_of(out.tree) + C.codecs_of(source)
    search = V._Search(out, collector, codecs, shown.casefold(), C.extended(out.tree, source))
    fixed = V._fixed()
    searched = [
        (text, value)
        for text, value in collector.values.items()
        if not V._trivial(text) and text.casefold() not in fixed
    ]
    out.index_pixels(form for text, _ in searched for form in V._forms(text, codecs))
    findings, names = [], []
    for text, value in searched:
        for finding in search.run(text, value):
            findings.append(finding)
            names.append(value.names)
    return V._settle_words(findings, names)


def _corpus(shared: Path) -> list[Path]:
    files = []
    for folder, count in FOLDERS.items():
        found = sorted(p for p in (shared / "corpus" / folder).rglob("*.dcm") if p.is_file())
        files.extend(found[:count])
    return files


def _cases(shared: Path, folder: Path) -> list[tuple[Path, Path, str]]:
    """(original, output, shown path): each corpus file de-identified, and as its own output."""
    cases = []
    for n, path in enumerate(_corpus(shared)):
        cases.append((path, path, f"copy/{path.name}"))  # every value found somewhere
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
                out, _ = Deidentifier(SECRET, DeidOptions()).deidentify(ds)
                target = folder / f"{n}.dcm"
                out.save_as(target, enforce_file_format=True)
            except Exception:  # noqa: BLE001 - what the engine refuses is not a case here
                continue
        cases.append((path, target, f"share/{n}.dcm"))
    return cases


def _rows(findings) -> list[tuple]:
    return [(f.attribute, f.value, f.where, f.kind, f.offset) for f in findings]


def test_shortcuts_find_what_the_exhaustive_search_finds_on_the_corpus(shared, tmp_path) -> None:
    cases = _cases(shared, tmp_path)
    assert len(cases) > 40
    exhaustive = [_rows(_exhaustive(o, d, shown)) for o, d, shown in cases]
    assert sum(map(len, exhaustive)) > 1000  # the originals as outputs: values found
    assert any(any(r[3] == "kept" for r in rows) for rows in exhaustive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _clear_caches()
        cold = [_rows(verify(o, d, output_path=shown)) for o, d, shown in cases]
        warm = [_rows(verify(o, d, output_path=shown)) for o, d, shown in reversed(cases)][::-1]
    assert cold == exhaustive
    assert warm == exhaustive


def test_output_may_hold_is_the_search_over_each_region(shared) -> None:
    """`Output.may_hold` answers as the three searches did (before the pixel data, inside it
    for long forms, after it), with the pixel data indexed in one pass or not."""
    for path in _corpus(shared)[:20]:
        out = O.Output.of(path)
        start, end = out.pixels
        low = out.low
        forms = {low[at : at + size] for at in range(0, len(low), 997) for size in (3, 6, 9)}
        forms |= {b"zz-not-there", low[start - 3 : start + 4], low[end - 4 : end + 3]}
        forms |= {low[at : at + 7] for at in range(start, end, max((end - start) // 50, 1))}
        forms.discard(b"")
        expected = {}
        for form in forms:
            before = low.find(form, 0, start) != -1 or low.find(form, end) != -1
            if not before and len(form) >= O.BULK_MIN_BYTES:
                before = low.find(form, start, end) != -1
            expected[form] = before
        assert {form: out.may_hold(form) for form in forms} == expected, path.name
        out.index_pixels(forms)  # the pixel data's positions of every long form, in one pass
        assert {form: out.may_hold(form) for form in forms} == expected, path.name
        for form in forms:
            matches = [at for at in O.hits(low, form, "text", start, end)]
            if len(form) >= O.BULK_MIN_BYTES:
                assert [at for at in out.search(form, "text") if start <= at < end] == matches


def test_planted_values_are_found_alike(shared, tmp_path) -> None:
    """Values typed into kept attributes, a kept sequence's item, a private block and the file
    name, kept on purpose or not: the same findings both ways."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(shared / "corpus" / "series" / "dcm_qa_ct_ge" / "01.dcm")
        ds.PatientName = "Doe^Johnathan"
        ds.PatientID = "4711235"
        ds.InstitutionName = "Mercy West"
        ds.AccessionNumber = "ACC99812"  # in the file name only
        source = tmp_path / "original.dcm"
        ds.save_as(source, enforce_file_format=True)
        out, _ = Deidentifier(SECRET, DeidOptions()).deidentify(ds)
        out.ImageType = [*out.ImageType, "DOE JOHNATHAN"]
        out.BodyPartExamined = "4711235"
        out.ConvolutionKernel = "Johnathan"
        if "AnatomicRegionSequence" in ds:
            out.AnatomicRegionSequence = copy.deepcopy(ds.AnatomicRegionSequence)
        out.add_new(0x00431027, "SH", "MERCY WEST")
        shared_dir = tmp_path / "share"
        shared_dir.mkdir()
        target = shared_dir / "1.dcm"
        out.save_as(target, enforce_file_format=True)
        for kept in (frozenset(), frozenset({"InstitutionName", "ImageType"})):
            shown = "DOE/4711235/ACC99812.dcm"
            exhaustive = _rows(_exhaustive(source, target, shown, kept))
            assert {"leak", "kept"} <= {r[3] for r in exhaustive} or kept == frozenset()
            assert any(r[2] == "output path" and r[1] == "AC******" for r in exhaustive)
            _clear_caches()
            assert _rows(verify(source, target, output_path=shown, kept=kept)) == exhaustive
            assert _rows(verify(source, target, output_path=shown, kept=kept)) == exhaustive


@pytest.mark.parametrize("name", ["chrH31.dcm", "chrSQEncoding.dcm", "chrX1.dcm"])
def test_code_extensions_search_the_decoded_texts_alike(shared, tmp_path, name) -> None:
    """ISO 2022 character sets: non-ASCII values are searched in decoded texts, not skipped."""
    path = shared / "corpus" / "charsets" / name
    if not path.is_file():
        pytest.skip(f"{name} not in the corpus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exhaustive = _rows(_exhaustive(path, path, "x/1.dcm"))
        assert exhaustive
        assert _rows(verify(path, path, output_path="x/1.dcm")) == exhaustive


def test_a_value_found_only_in_decoded_text_is_found_alike(shared, tmp_path) -> None:
    """An ISO 2022 name typed without its delimiter: its encoded forms are not in the output's
    bytes (the escape back to ASCII comes after the whole text), only its decoded text is."""
    path = shared / "corpus" / "charsets" / "chrH31.dcm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = pydicom.dcmread(path)  # the original shared as it is, with one more comment
        out.ImageComments = "\u3084\u307e\u3060\u305f\u308d\u3046"  # a name, undelimited
        del out.PatientName  # the name only in the comment
        target = tmp_path / "1.dcm"
        out.save_as(target, enforce_file_format=True)
        exhaustive = _rows(_exhaustive(path, target, "x/1.dcm"))
        comments = [r for r in exhaustive if r[2] == "(0020,4000) ImageComments"]
        assert any(r[1].startswith("\u3084") and r[4] is None for r in comments), comments
        assert _rows(verify(path, target, output_path="x/1.dcm")) == exhaustive
