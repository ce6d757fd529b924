"""Prove that no identifying value of an original survives in its de-identified output.

`verify` collects every value of the original that the profile does not keep (any VR, any
character set, names and their parts, dates in DA/DT forms, UIDs, private text) and searches
each one everywhere in the output: every byte of it (all attributes, the ones the profile keeps
included, private blocks, nested items, the File Meta Information, the pixel data), its decoded
text values where ISO 2022 escapes are in use, and its path. Each value is classified by the
attribute it came from:

- **strong** identifiers (person names, IDs, accession numbers, dates and datetimes, addresses,
  telephone numbers, institution, department and station names, device serial numbers, AE
  titles, UIDs) are a leak wherever they are found, in kept attributes too: a patient's name
  typed into Image Type is still the patient's name. One exception, for single words that are
  also ordinary words (one part of a person name, a one-word institution): found only where the
  original already held it, in an attribute the output keeps, such a word is *kept*, unless
  another part of the same name is in the same element;
- **weak** values (descriptions, comments, codes, times, private text the profile removes) are
  reported as *kept* when found only inside an attribute the output keeps whose original value
  already held them (a Study Description ``CHEST`` equal to the Body Part Examined the profile
  keeps), and as a leak anywhere else.

Attributes kept on purpose (the ``kept`` argument: a recipe's keeps; and the attributes an
Option keeps that the Basic Profile would not) are reported as kept: their own values wherever
they are found, and any value found inside them that the original held there.

Values that cannot identify anyone on their own are not searched (the trivial-value rule):
values shorter than 3 characters; numbers (digits, ``.``, ``+``, ``-``, spaces) shorter than 6
characters or made of zeros (longer numbers match only where no other digit touches them);
binary numbers; values contained in one of the engine's fixed texts (``ANONYMOUS``,
``CLEANED``, the dummy dates and times, the CID 7050 code meanings).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from pydicom.dataset import Dataset

from .._version import __version__
from ..dicom import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from ._options import BASIC_PROFILE_CODE, DeidOptions
from ._record import INSERTED_TEXTS
from ._tables import method_codes
from ._values import FIXED_TEXTS
from ._verify_collect import (
    Collector,
    Searched,
    codecs_of,
    extended,
    source_tree,
)
from ._verify_output import Output, Place, find, hits
from ._verify_tree import Tree, Unwalkable

__all__ = ["KEPT", "LEAK", "Finding", "verify"]

#: A finding's kind: an identifying value the output should not hold.
LEAK = "leak"
#: A finding's kind: a value the output holds because an attribute is kept (listed, not failed).
KEPT = "kept"
#: While searching: a single-word strong value kept, unless another part of its name is there.
_WORD_KEPT = "word"

_NUMERIC = re.compile(r"[0-9.+\- ]+")
#: Occurrences of one value examined per output (enough to tell kept from leaked).
MAX_HITS = 32


@dataclass(frozen=True)
class Finding:
    """An identifying value of the original found in the output.

    Attributes
    ----------
    attribute : str
        Where the value sat in the original: tag path and keyword, e.g.
        ``(0008,1140) ReferencedImageSequence[0]>(0008,1155) ReferencedSOPInstanceUID``.
    value : str
        The value, masked (first two characters, then ``*``), so reports can be shared.
    where : str
        Where it was found in the output: the element (``(0008,0008) ImageType``,
        ``(0008,2218) AnatomicRegionSequence[0]>(0008,0104) CodeMeaning``, ``File Meta (0002,0016)
        SourceApplicationEntityTitle``), ``preamble``, ``bytes outside any element value``,
        or ``output path``.
    kind : str
        ``leak`` (`LEAK`): the output should not hold it; ``kept`` (`KEPT`): it is there because
        an attribute is kept (by the profile, for a value that is not a strong identifier and
        that the original held in that attribute, or on purpose, ``kept=``). Only leaks fail
        verification.
    offset : int or None
        The byte offset in the output (of the inflated data set for a deflated one), when found
        in its bytes.
    """

    attribute: str
    value: str
    where: str
    kind: str = LEAK
    offset: int | None = None


def _mask(text: str) -> str:
    return text[:2] + "*" * max(len(text) - 2, 1)


def _trivial(text: str) -> bool:
    if len(text) < 3:
        return True
    if _NUMERIC.fullmatch(text):
        return len(text) < 6 or set(text) <= set("0.+- ")
    return False


@lru_cache(maxsize=65536)
def _prepared(text: str, codecs: tuple[str, ...], fixed: str) -> list[bytes] | None:
    """The forms searched for a value (`_forms`), ``None`` for a value not searched."""
    return None if _ignored(text, fixed) else _forms(text, codecs)


@lru_cache(maxsize=65536)
def _ignored(text: str, fixed: str) -> bool:
    """Whether a value is not searched: trivial, or part of one of the engine's fixed texts."""
    return _trivial(text) or text.casefold() in fixed


def _forms(text: str, codecs: list[str] | tuple[str, ...]) -> list[bytes]:
    """The value's encodings in the output's and original's character sets, UTF-8 and
    Latin-1, with ASCII letters lowered (as the searched bytes are)."""
    if text.isascii():
        return [text.lower().encode("ascii")]  # the same bytes in every DICOM character set
    return list(_coded_forms(text, tuple(codecs)))


@lru_cache(maxsize=4096)
def _coded_forms(text: str, codecs: tuple[str, ...]) -> tuple[bytes, ...]:
    variants = {text, text.lower(), text.upper()}
    forms: set[bytes] = set()
    for variant in variants:
        for codec in [*codecs, "utf-8", "latin-1"]:
            try:
                forms.add(variant.encode(codec).lower())
            except (UnicodeEncodeError, LookupError):
                continue
    return tuple(sorted(f for f in forms if f))


def _recorded_options(codes: list[str]) -> DeidOptions:
    """The options of the last de-identification, from its CID 7050 codes."""
    return _options_of(tuple(codes))


@lru_cache(maxsize=256)
def _options_of(codes_seen: tuple[str, ...]) -> DeidOptions:
    codes = list(codes_seen)
    if BASIC_PROFILE_CODE in codes:  # the last de-identification's codes start there
        codes = codes[len(codes) - 1 - codes[::-1].index(BASIC_PROFILE_CODE) :]
    return DeidOptions.from_codes(codes)


@lru_cache(maxsize=1)
def _fixed() -> str:
    return "\0".join(
        [
            *FIXED_TEXTS,
            *INSERTED_TEXTS,
            f"dicomflow {__version__} PS3.15 Annex E",
            IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_VERSION_NAME,
            *(f"{c.code_value}\0{c.meaning}" for c in method_codes().values()),
        ]
    ).casefold()


class _Search:
    """Searches one output for the values of one original."""

    def __init__(
        self, output: Output, collector: Collector, codecs: list[str], path: str, decode: bool
    ) -> None:
        self.output = output
        self.collector = collector
        self.codecs = codecs
        self.path = path
        self.decode = decode

    def judge(self, value: Searched, folded: str, forms: list[bytes], place: Place | None) -> str:
        """``kept`` or ``leak`` for one place the value was found at; ``word``: kept, unless
        another part of the same name is found at the same place (decided by `verify`)."""
        if value.deliberate:
            return KEPT
        if place is None or place.meta:
            return LEAK
        keeps = not value.strong or value.word or self.collector.chosen_by_option(place.key)
        keeps = keeps or self.collector.deliberate(place.key, place.keywords)
        if not keeps or not self.collector.holds(place.key, folded, forms):
            return LEAK
        return _WORD_KEPT if value.strong and value.word else KEPT

    def may_find(self, text: str, forms: list[bytes]) -> bool:
        """Whether `run` can find anything for the value: some form in the bytes it searches,
        a non-ASCII value in decoded texts, or the value in the output path (a clean output
        holds most values nowhere, settled so without more work)."""
        may_hold = self.output.may_hold  # after `Output.index`: a look-up per form
        for form in forms:
            if may_hold(form):
                return True
        if self.decode and not text.isascii():
            return True
        return bool(self.path) and text.casefold() in self.path

    def run(self, text: str, value: Searched, forms: list[bytes] | None = None) -> list[Finding]:
        folded = text.casefold()
        if forms is None:
            forms = _forms(text, self.codecs)
        found: dict[str, Finding] = {}

        def record(where: str, kind: str, offset: int | None) -> None:
            old = found.get(where)
            if old is None or (old.kind != LEAK and kind == LEAK):
                found[where] = Finding(value.attribute, _mask(text), where, kind, offset)

        output = self.output
        seen = 0
        if not any(output.may_hold(form) for form in forms):
            forms_found: list[bytes] = []  # nowhere in the output: nothing to place
        else:
            forms_found = forms
        for form in forms_found:
            for at in output.search(form, value.match):
                place = output.place_at(at)
                where = place.label if place is not None else output.outside(at)
                record(where, self.judge(value, folded, forms, place), at)
                seen += 1
                if seen >= MAX_HITS:
                    break
            if seen >= MAX_HITS:
                break
        if not seen and self.decode and not text.isascii():  # code extensions (ISO 2022)
            for place, decoded in output.texts(self.codecs):
                if find(decoded, folded, value.match) != -1:
                    record(place.label, self.judge(value, folded, forms, place), None)
        if self.path and _in_path(self.path, folded, value.match):
            record("output path", KEPT if value.deliberate else LEAK, None)
        return list(found.values())


#: A value this long found inside a word of the output path is a leak; a shorter one must be a
#: whole word of it (written names are random letters and digits: "SP2" is found by chance in
#: one of them every few runs).
PATH_WORD_INSIDE = 8


def _in_path(path: str, folded: str, match: str) -> bool:
    """Whether the output path shows the value: as a whole word (between characters that are
    not letters or digits), or inside one when it is :data:`PATH_WORD_INSIDE` long or more."""
    for at in hits(path, folded, match):
        if len(folded) >= PATH_WORD_INSIDE:
            return True
        stop = at + len(folded)
        if not (at > 0 and path[at - 1].isalnum()) and not (
            stop < len(path) and path[stop].isalnum()
        ):
            return True
    return False


def verify(
    original: Dataset | str | Path,
    deidentified: Dataset | str | Path,
    *,
    output_path: str | Path | None = None,
    options: DeidOptions | None = None,
    kept: Collection[str] = (),
) -> list[Finding]:
    """Search the de-identified output for every identifying value of the original.

    Parameters
    ----------
    original, deidentified : Dataset or path
        The instance before and after de-identification (datasets or Part 10 files).
    output_path : str or Path, optional
        Where the output is (or will be) stored; searched too. Defaults to ``deidentified``
        when that is a path.
    options : DeidOptions, optional
        The options used; by default read from the output's De-identification Method Code
        Sequence (CID 7050 codes), so values an Option keeps are not searched.
    kept : collection of str, optional
        Attributes kept on purpose (keywords, or tags as ``(gggg,eeee)``; a sequence covers
        what is inside it), e.g. by a recipe: their values, and values the original held in
        them, are reported as kept, not as leaks.

    Returns
    -------
    list of Finding
        One per value and place found, leaks (``kind == "leak"``) and values there because an
        attribute is kept (``kind == "kept"``); no leak means nothing identifying was left.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName = "Doe^Jane"
    >>> leaky = Dataset()
    >>> leaky.ImageComments = "scan of Jane Doe"
    >>> sorted((f.value, f.where, f.kind) for f in verify(ds, leaky))
    [('Do*', '(0020,4000) ImageComments', 'leak'), ('Ja**', '(0020,4000) ImageComments', 'leak')]
    """
    if output_path is None and not isinstance(deidentified, Dataset):
        output_path = deidentified
    path = str(output_path).casefold() if output_path is not None else ""
    source, output = source_tree(original), Output.of(deidentified)
    for _ in range(3):
        try:
            return _verified(source, output, path, options, frozenset(kept))
        except Unwalkable as exc:  # items the walker cannot follow: pydicom reads that side
            if exc.tree is source:
                source = source_tree(original, walker=False)
            elif exc.tree is output.tree:
                output = Output.of(deidentified, walker=False)
            else:
                raise
    raise AssertionError("unreachable: both sides read by pydicom")


def _verified(
    source: Tree, output: Output, path: str, options: DeidOptions | None, kept: frozenset[str]
) -> list[Finding]:
    if options is None:
        options = _recorded_options(output.method_codes())
    collector = Collector(source, options, kept)
    collector.collect()
    fixed = _fixed()
    codecs = codecs_of(output.tree) + codecs_of(source)
    search = _Search(output, collector, codecs, path, extended(output.tree, source))
    key = tuple(codecs)
    searched = [
        (t, forms) for t, forms in _searched(collector, key, fixed).items() if forms is not None
    ]
    output.index([form for _, forms in searched for form in forms])
    findings: list[Finding] = []
    names: list[frozenset[int]] = []
    may_find = search.may_find
    for text, forms in searched:
        if not may_find(text, forms):
            continue  # nowhere in the output: most values of a clean one
        value = collector.searched(text)
        for finding in search.run(text, value, forms):
            findings.append(finding)
            names.append(value.names)
    return _settle_words(findings, names)


def _searched(
    collector: Collector, codecs: tuple[str, ...], fixed: str
) -> dict[str, list[bytes] | None]:
    """The values of the original in the order first seen, with the forms searched for each
    (`_prepared`; ``None``: not searched), made once per part of a run."""
    if collector.parts is None:
        return {text: _prepared(text, codecs, fixed) for text in collector.texts()}
    found: dict[str, list[bytes] | None] = {}
    for part in collector.parts:
        forms = part.forms
        if forms is None or forms[0] != codecs:
            forms = part.forms = (codecs, {t: _prepared(t, codecs, fixed) for t in part.values})
        found.update(forms[1])  # a value seen before keeps its place (its forms are the same)
    return found


def _settle_words(findings: list[Finding], names: list[frozenset[int]]) -> list[Finding]:
    """Single-word strong values found where the original held them are kept, unless two
    parts of one person name are found in the same place: then each is a leak."""
    parts: dict[tuple[str, int], int] = {}
    for finding, groups in zip(findings, names, strict=True):
        if finding.kind == _WORD_KEPT:
            for group in groups:
                parts[(finding.where, group)] = parts.get((finding.where, group), 0) + 1
    settled = []
    for finding, groups in zip(findings, names, strict=True):
        if finding.kind == _WORD_KEPT:
            together = any(parts[(finding.where, g)] > 1 for g in groups)
            finding = replace(finding, kind=LEAK if together else KEPT)
        settled.append(finding)
    return settled
