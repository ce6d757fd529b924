"""The standard's tables, read once from package data (``data/``) into immutable structures.

Nothing here interprets the tables; `_policy` does. Every loader is cached: the files are read
at most once per process, the first time they are needed.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from types import MappingProxyType

__all__ = [
    "CodeRow",
    "ContentRow",
    "IodTypes",
    "ProfileRow",
    "content_rows",
    "iod_for_sop_class",
    "iod_types",
    "method_codes",
    "parse_tag",
    "profile_rows",
    "safe_private",
    "unlisted_keep",
]

#: Table E.1-1 columns of the Options, in table order.
OPTION_COLUMNS = (
    "rtn_safe_priv",
    "rtn_uids",
    "rtn_dev_id",
    "rtn_inst_id",
    "rtn_pat_chars",
    "rtn_long_full_dates",
    "rtn_long_modif_dates",
    "clean_desc",
    "clean_struct_cont",
    "clean_graph",
)


def _text(name: str) -> str:
    data = resources.files(__package__) / "data" / name
    raw = data.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(_text(name), newline="")))


def parse_tag(text: str) -> int:
    """``"(0010,0010)"`` -> ``0x00100010``."""
    return int(text[1:5] + text[6:10], 16)


@dataclass(frozen=True)
class ProfileRow:
    """One row of Table E.1-1.

    Attributes
    ----------
    tag : str
        As published: ``(0010,0010)``, a mask ``(60xx,3000)``, or the private-attribute rule.
    name : str
        Attribute name as published.
    kind : str
        ``exact``, ``mask`` or ``private_rule``.
    retired : bool
        The "Retd." column.
    basic : str
        Basic Profile code (``X``, ``Z``, ``D``, ``U``, ``X/Z``, ...).
    options : Mapping[str, str]
        Non-empty Option cells, by column (``rtn_uids`` -> ``K``).
    """

    tag: str
    name: str
    kind: str
    retired: bool
    basic: str
    options: Mapping[str, str]

    @property
    def value(self) -> int:
        """The tag as an integer (exact rows only)."""
        return parse_tag(self.tag)


@cache
def profile_rows() -> tuple[ProfileRow, ...]:
    """Table E.1-1, in file order."""
    out = []
    for r in _rows("ps3.15-e.1-1.csv"):
        opts = {c: r[c] for c in OPTION_COLUMNS if r[c]}
        out.append(
            ProfileRow(
                tag=r["tag"],
                name=r["name"],
                kind=r["tag_kind"],
                retired=r["retired"] == "Y",
                basic=r["basic_profile"],
                options=MappingProxyType(opts),
            )
        )
    return tuple(out)


@cache
def action_codes() -> Mapping[str, str]:
    """Table E.1-1a: action code -> definition."""
    return MappingProxyType({r["code"]: r["meaning"] for r in _rows("ps3.15-e.1-1a.csv")})


@cache
def safe_private() -> Mapping[tuple[int, str, int], str]:
    """Table E.3.10-1: ``(group, private creator, element offset)`` -> VR (may be empty)."""
    return MappingProxyType(
        {
            (int(r["group"], 16), r["private_creator"].strip(), int(r["element_low_byte"], 16)): r[
                "vr"
            ]
            for r in _rows("ps3.15-e.3.10-1.csv")
        }
    )


@dataclass(frozen=True)
class ContentRow:
    """One row of Table E.3.4-1 (Clean Structured Content concept names)."""

    code_value: str
    scheme: str
    meaning: str
    value_type: str
    basic: str
    options: Mapping[str, str]


@cache
def content_rows() -> Mapping[tuple[str, str], tuple[ContentRow, ...]]:
    """Table E.3.4-1 keyed by ``(code value, coding scheme designator)``."""
    found: dict[tuple[str, str], list[ContentRow]] = defaultdict(list)
    for r in _rows("ps3.15-e.3.4-1.csv"):
        opts = {c: r[c] for c in OPTION_COLUMNS if r.get(c)}
        row = ContentRow(
            code_value=r["code_value"],
            scheme=r["coding_scheme_designator"],
            meaning=r["code_meaning"],
            value_type=r["value_type"],
            basic=r["basic_profile"],
            options=MappingProxyType(opts),
        )
        found[(row.code_value, row.scheme)].append(row)
    return MappingProxyType({k: tuple(v) for k, v in found.items()})


@dataclass(frozen=True)
class CodeRow:
    """One CID 7050 code."""

    code_value: str
    scheme: str
    meaning: str


@cache
def method_codes() -> Mapping[str, CodeRow]:
    """CID 7050 keyed by code value."""
    return MappingProxyType(
        {
            r["code_value"]: CodeRow(
                r["code_value"], r["coding_scheme_designator"], r["code_meaning"]
            )
            for r in _rows("cid7050.csv")
        }
    )


@cache
def _sop_classes() -> Mapping[str, str]:
    return MappingProxyType({r["sop_class_uid"]: r["ciod"] for r in _rows("sop-class-to-iod.csv")})


def iod_for_sop_class(uid: str) -> str | None:
    """The IOD name (``CT Image``) of a Storage SOP Class UID, ``None`` when unknown."""
    return _sop_classes().get(uid)


@cache
def unlisted_keep() -> frozenset[int]:
    """Tags of the text attributes kept although Table E.1-1 does not list them."""
    return frozenset(parse_tag(r["tag"]) for r in _rows("unlisted-keep.csv"))


@dataclass(frozen=True)
class IodTypes:
    """The PS3.3 Types of one IOD that the engine needs.

    Attributes
    ----------
    ciod : str
        IOD name.
    compound : Mapping[tuple[int, ...], tuple[tuple[str, str, int], ...]]
        Attribute path (tags from the top level) -> ``(module, usage, type)`` for every
        attribute with a compound Basic Profile code; ``type`` is 1, 2 or 3.
    evidence : Mapping[str, frozenset[int]]
        For each ``U``/``C`` module above: top-level tags only it defines (empty: cannot tell,
        taken as present).
    unlisted : Mapping[int, int]
        Tag -> strictest Type (1 or 2) of text/date attributes Table E.1-1 does not list.
    """

    ciod: str
    compound: Mapping[tuple[int, ...], tuple[tuple[str, str, int], ...]]
    evidence: Mapping[str, frozenset[int]]
    unlisted: Mapping[int, int]

    def present_modules(self, top_level: frozenset[int] | set[int]) -> frozenset[str]:
        """The optional/conditional modules an instance with these top-level tags carries."""
        return frozenset(
            module
            for module, tags in self.evidence.items()
            if not tags or not tags.isdisjoint(top_level)
        )

    def strictest(self, path: tuple[int, ...], present: frozenset[str]) -> int | None:
        """Strictest Type of ``path`` among mandatory and present modules; ``None``: not in IOD."""
        best = None
        for module, usage, kind in self.compound.get(path, ()):
            if usage == "M" or module in present:
                if best is None or kind < best:
                    best = kind
        return best


@cache
def _lines_by_iod(name: str) -> Mapping[str, tuple[str, ...]]:
    """The data lines of one per-IOD table, grouped by their first column (the IOD name):
    an IOD's rows are parsed only when an instance of it is first seen."""
    lines = _text(name).splitlines()
    found: dict[str, list[str]] = defaultdict(list)
    header = lines[0]
    for line in lines[1:]:
        if line.startswith('"'):  # a quoted IOD name (none today): parsed as CSV
            ciod = next(csv.reader([line]))[0]
        else:
            ciod = line[: line.index(",")]
        found[ciod].append(line)
    return MappingProxyType({k: (header, *v) for k, v in found.items()})


@cache
def _table_text(name: str) -> tuple[str, bool]:
    """A per-IOD table's text, and whether some IOD name in it is quoted."""
    text = _text(name)
    return text, '\n"' in text


#: per table, the IODs looked up by a search of its text: past a few, grouping every line
#: once (`_lines_by_iod`) costs less than searching again
_searched: dict[str, int] = defaultdict(int)


def _iod_rows(name: str, ciod: str) -> list[dict[str, str]]:
    text, quoted = _table_text(name)
    if quoted or '"' in ciod or _searched[name] >= 4:  # (no quoted name today)
        lines = _lines_by_iod(name).get(ciod)
    else:  # the lines whose first column is this IOD, found by one search of the text
        _searched[name] += 1
        header = text[: text.index("\n")].rstrip("\r")
        found = re.findall(rf"^{re.escape(ciod)},.*?(?=\r?$)", text, re.M)
        lines = (header, *found) if found else None
    return list(csv.DictReader(lines)) if lines else []


@cache
def _iod_types(ciod: str) -> IodTypes | None:
    compound: dict[tuple[int, ...], list[tuple[str, str, int]]] = defaultdict(list)
    for r in _iod_rows("iod-compound-types.csv.gz", ciod):
        path = tuple(parse_tag(t) for t in r["path"].split(">"))
        compound[path].append((r["module"], r["usage"], int(r["type"])))
    evidence: dict[str, frozenset[int]] = {}
    for r in _iod_rows("iod-module-evidence.csv.gz", ciod):
        evidence[r["module"]] = frozenset(parse_tag(t) for t in r["evidence"].split(" ") if t)
    unlisted: dict[int, int] = {}
    for r in _iod_rows("iod-unlisted-types.csv.gz", ciod):
        unlisted[parse_tag(r["tag"])] = int(r["type"])
    if not (compound or evidence or unlisted):
        return None
    return IodTypes(
        ciod=ciod,
        compound=MappingProxyType({p: tuple(v) for p, v in compound.items()}),
        evidence=MappingProxyType(evidence),
        unlisted=MappingProxyType(unlisted),
    )


def iod_types(ciod: str | None) -> IodTypes | None:
    """The Types of IOD ``ciod``; ``None`` when the IOD is unknown."""
    if ciod is None:
        return None
    return _iod_types(ciod)
