"""From Table E.1-1 and the options to one action code per attribute.

A `Policy` is built once per `DeidOptions` (and cached): a ``tag -> code`` dict for every
attribute of the data dictionary and of Table E.1-1, so the engine does one dict lookup per
element. Codes that depend on the instance (the compound codes, resolved by the attribute's Type
in the instance's IOD, and ``T``, the default for unlisted text/date attributes) are resolved
per instance by `resolve`.

Codes: ``X`` remove, ``Z`` empty, ``D`` dummy, ``K`` keep, ``C`` clean, ``U`` replace UID,
compound ``X/Z``, ``Z/D``, ``X/D``, ``X/Z/D``, ``X/Z/U*``; internal ``T`` (removal unless the
IOD's Type asks for a dummy or an empty value) and ``U*`` (a Type 1 ``X/Z/U*`` sequence: kept,
the instance UIDs inside it replaced by their own rules).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache

from pydicom.datadict import DicomDictionary, dictionary_VR

from ._options import DeidOptions
from ._tables import ContentRow, IodTypes, profile_rows, unlisted_keep

__all__ = [
    "DATE_VRS",
    "TEXT_VRS",
    "Policy",
    "combine",
    "content_item_code",
    "policy_for",
    "resolve",
]

#: Value representations of free text, names, AE titles, URIs and ages.
TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UT", "UC", "PN", "UR", "AE", "AS"})
#: Value representations of dates and times.
DATE_VRS = frozenset({"DA", "DT", "TM"})

KEEP_REFS = "U*"
UNLISTED_TEXT = "T"

#: Safety order used when two selected Options disagree: the larger removes more.
_SAFETY = {"K": 0, "C": 1, "U": 2, "D": 3, "Z": 4, "X": 5}

OVERLAY_GROUPS = range(0x6000, 0x6020, 2)
CURVE_GROUPS = range(0x5000, 0x5020, 2)


def combine(basic: str, cells: Iterable[str]) -> str:
    """Apply PS3.15 E.3 precedence: a selected Option's code replaces the Basic Profile code.

    Where two selected Options give different codes (in Table E.1-1 only Retain Device
    Identity ``K`` against Retain Longitudinal Temporal Information with Modified Dates ``C``),
    the safer code wins (``X`` > ``Z`` > ``D`` > ``U`` > ``C`` > ``K``).

    Examples
    --------
    >>> combine("X", [])
    'X'
    >>> combine("X", ["K"])
    'K'
    >>> combine("X", ["K", "C"])
    'C'
    """
    found = [c for c in cells if c]
    if not found:
        return basic
    if len(set(found)) == 1:
        return found[0]
    return max(set(found), key=_SAFETY.__getitem__)


def _class_uid(keyword: str) -> bool:
    return keyword.endswith(("ClassUID", "TransferSyntaxUID"))


@dataclass(frozen=True)
class Policy:
    """Action codes for one set of options.

    Attributes
    ----------
    options : DeidOptions
        What it was built for.
    codes : dict[int, str]
        Tag -> code, pre-filled for the data dictionary and Table E.1-1; tags outside both
        (repeating groups, unknown public tags) are added the first time they are seen.
    fallback : Mapping[int, str]
        For rows whose code became ``C``: the Basic Profile code, used where the value cannot be
        cleaned in place (binary timestamps, for instance).
    private : str
        ``X``, or ``C`` with Retain Safe Private (safe attributes kept, the rest removed).
    """

    options: DeidOptions
    codes: dict[int, str]
    fallback: Mapping[int, str]
    private: str
    overlay_data: str
    overlay_comments: str
    curve: str
    keep_text: frozenset[int] = field(default_factory=frozenset)
    max_bytes: Mapping[int, int] = field(default_factory=dict)

    def code(self, tag: int) -> str:
        """The (possibly compound) code of a public attribute."""
        found = self.codes.get(tag)
        if found is None:
            found = self.codes[tag] = self._unknown(tag)
        return found

    def _unknown(self, tag: int) -> str:
        group, elem = tag >> 16, tag & 0xFFFF
        if group in CURVE_GROUPS:
            return self.curve
        if group in OVERLAY_GROUPS:
            if elem == 0x3000:
                return self.overlay_data
            if elem == 0x4000:
                return self.overlay_comments
            if self.overlay_data == "X":
                return "X"  # the overlay goes as a whole with its data
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                return "X"
            return self._default(tag, vr, keyword="")
        return "X"  # not in the data dictionary: unknown meaning, removed

    def _default(self, tag: int, vr: str, keyword: str) -> str:
        """Code of a dictionary attribute that Table E.1-1 does not list."""
        if tag in self.keep_text:
            return "K"
        if vr == "SQ":
            return "K"
        if vr == "UN":
            return "X"
        if vr == "UI":
            return "K" if _class_uid(keyword) or self.options.retain_uids else "U"
        if vr in DATE_VRS:
            if self.options.retain_longitudinal_full_dates:
                return "K"
            if self.options.retain_longitudinal_modified_dates:
                return "C"
            return UNLISTED_TEXT
        if vr in TEXT_VRS:
            return UNLISTED_TEXT
        return "K"


_FIXED_SIZE = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "AT": 4, "SV": 8, "UV": 8}


def _max_bytes() -> dict[int, int]:
    """Longest possible value of fixed-size attributes with a bounded VM, by tag."""
    found = {}
    for tag, (vr, vm, *_rest) in DicomDictionary.items():
        size = max(_FIXED_SIZE.get(v, 0) for v in vr.split(" or "))
        if not size or "n" in vm or not _FIXED_SIZE.get(vr.split(" or ")[0]):
            continue
        try:
            found[tag] = size * int(vm.split("-")[-1])
        except ValueError:
            continue
    return found


def _build(options: DeidOptions) -> Policy:
    columns = options.columns
    keep_text = unlisted_keep()
    codes: dict[int, str] = {}
    fallback: dict[int, str] = {}
    masks: dict[str, str] = {}
    private = "X"
    probe = Policy(options, codes, fallback, "X", "X", "X", "X", keep_text)
    for tag, entry in DicomDictionary.items():
        vr, _vm, _name, retired, keyword = entry[:5]
        group, elem = tag >> 16, tag & 0xFFFF
        if elem == 0 or group in (0x0002, 0x0004) or retired:
            codes[tag] = "X"
        else:
            codes[tag] = probe._default(tag, vr.split(" ")[0], keyword)
    for row in profile_rows():
        code = combine(row.basic, [row.options.get(c, "") for c in columns])
        if row.kind == "private_rule":
            private = code
        elif row.kind == "mask":
            masks[row.tag] = code
        else:
            tag = row.value
            codes[tag] = code
            if code == "C":
                fallback[tag] = row.basic
    # Outside a DICOMDIR no group 0004 attribute may stay (PS3.15 E.1.1); group 0002 is the
    # File Meta Information, regenerated by the engine.
    for tag in list(codes):
        if tag >> 16 in (0x0002, 0x0004):
            codes[tag] = "X"
    return Policy(
        options=options,
        codes=codes,
        fallback=fallback,
        private=private,
        overlay_data=masks.get("(60xx,3000)", "X"),
        overlay_comments=masks.get("(60xx,4000)", "X"),
        curve=masks.get("(50xx,xxxx)", "X"),
        keep_text=keep_text,
        max_bytes=_max_bytes(),
    )


@cache
def policy_for(options: DeidOptions) -> Policy:
    """The `Policy` of ``options``, built once per distinct options value."""
    return _build(options)


def resolve(
    code: str,
    tag: int,
    path: tuple[int, ...],
    types: IodTypes | None,
    present: frozenset[str],
) -> str:
    """Resolve a compound or ``T`` code for one occurrence of an attribute.

    Parameters
    ----------
    code : str
        The code from `Policy.code`.
    tag : int
        The attribute.
    path : tuple of int
        Tags of the sequences that contain it, from the top level.
    types : IodTypes or None
        The instance's IOD; ``None`` when its SOP Class is unknown.
    present : frozenset of str
        The optional/conditional modules the instance carries.

    Returns
    -------
    str
        A simple code (``X``, ``Z``, ``D``, ``U``), or ``U*``. Compound codes: with an unknown
        IOD the first (default) letter; an attribute the IOD does not define at this path is
        removed (``X``, PS3.15 E.1-1 Note 13); otherwise Type 1 gives the last letter (``D``,
        or ``U*`` for ``X/Z/U*``), Type 2 gives ``Z`` (or ``D`` when ``Z`` is not offered;
        ``U*`` for ``X/Z/U*``) and Type 3 the first letter. ``T``: Type 1 -> ``D``, Type 2 ->
        ``Z``, else ``X``.
    """
    if code == UNLISTED_TEXT:
        kind = types.unlisted.get(tag) if types is not None else None
        return "D" if kind == 1 else "Z" if kind == 2 else "X"
    if "/" not in code:
        return code
    letters = code.split("/")
    if types is None:
        return letters[0]
    kind = types.strictest((*path, tag), present)
    if kind is None:
        return "X"
    if kind == 1:
        return KEEP_REFS if letters[-1] == "U*" else letters[-1]
    if kind == 2:
        if letters[-1] == "U*":
            # An emptied Type 2 reference sequence contradicts the references the instance
            # keeps elsewhere (Common Instance Reference module, dciodvfy flags it): keep the
            # references, with their instance UIDs replaced, as for Type 1.
            return KEEP_REFS
        return "Z" if "Z" in letters else letters[-1]
    return letters[0]


def content_item_code(rows: tuple[ContentRow, ...], value_type: str, options: DeidOptions) -> str:
    """Table E.3.4-1 code of a content item, Options applied (compound: first letter)."""
    chosen = rows[0]
    for row in rows:
        if row.value_type == value_type:
            chosen = row
            break
    code = combine(chosen.basic, [chosen.options.get(c, "") for c in options.columns])
    return code.split("/")[0]
