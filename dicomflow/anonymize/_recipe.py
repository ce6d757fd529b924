"""Recipes: per-attribute rules layered on the PS3.15 profile (keep, remove, empty, replace,
pseudonymise, shift), from Python, a TOML file or the command line.

A rule names its attributes by a **target**:

* a keyword (``SeriesDescription``) or a tag (``(0008,103E)``, ``0008103E``): one public
  attribute, at every nesting level;
* a mask (``(0018,xxxx)``, ``(60xx,4000)``): every public attribute whose tag matches, ``x``
  standing for any hex digit;
* a private attribute by its creator: ``(0019,"GEMS_ACQU_01",9C)`` (group, Private Creator
  value, element offset, i.e. the low byte), ``(0019,"GEMS_ACQU_01",xx)`` for the creator's
  whole block, or ``(0019,xxxx)`` for every private attribute of group 0019.

Precedence, highest first: a later layer (`Recipe.then`: the command line over a recipe file),
then within one layer the most specific target (a keyword, tag or private element over a
private block, over a mask with fewer wildcard digits), then the profile Options, then the Basic
Profile. Two rules of one layer on the same attributes at the same specificity must agree, or
the recipe is refused.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom import config as _pydicom_config
from pydicom.datadict import DicomDictionary, dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.valuerep import validate_value

from ..errors import ConfigError

if TYPE_CHECKING:
    from ._options import DeidOptions

__all__ = ["ACTIONS", "Recipe", "RecipeRule", "Target", "parse_target"]

#: The actions of a rule, in the order a recipe file lists them.
ACTIONS = ("keep", "remove", "empty", "replace", "pseudonymise", "shift")
_ALIASES = {"pseudonymize": "pseudonymise"}

#: One value, or several (a multi-valued attribute).
Scalar = str | int | float
Value = Scalar | tuple[Scalar, ...]

#: Attributes dicomflow writes itself after the walk (PS3.15 E.1.1 and E.3.6 records).
WRITTEN = {
    0x00120062: "PatientIdentityRemoved",
    0x00120063: "DeidentificationMethod",
    0x00120064: "DeidentificationMethodCodeSequence",
    0x00280303: "LongitudinalTemporalInformationModified",
}
_PIXELS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
_CHARSET = 0x00080005

_INT_VRS = frozenset({"US", "SS", "UL", "SL", "SV", "UV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
_STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
     "UR", "UT"}
)  # fmt: skip
#: What `pseudonymise` can replace by a keyed value: UIDs and text short enough for a token.
PSEUDONYM_VRS = frozenset({"UI", "AE", "CS", "SH", "LO", "PN", "LT", "ST", "UT", "UC"})
DATE_VRS = frozenset({"DA", "DT"})

_PRIVATE = re.compile(
    r'^\(\s*([0-9A-Fa-f]{4})\s*,\s*"([^"]*)"\s*,\s*([0-9A-Fa-f]{2}|[xX]{2})\s*\)$'
)
_TAG = re.compile(r"^\(?\s*([0-9A-Fa-fxX]{4})\s*,\s*([0-9A-Fa-fxX]{4})\s*\)?$")
_PLAIN = re.compile(r"^[0-9A-Fa-f]{8}$")
_KEYWORD = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class Target:
    """What a rule applies to, parsed from its text (see the module docstring).

    Attributes
    ----------
    text : str
        The normalised form: the keyword as written, ``(GGGG,EEEE)``, ``(60xx,4000)``,
        ``(0019,"CREATOR",9C)``, ``(0019,"CREATOR",xx)`` or ``(0019,xxxx)``.
    kind : str
        ``public`` (one tag), ``mask``, ``private`` (one element of a creator's block),
        ``block`` (a creator's whole block) or ``group`` (every private attribute of a group).
    value, mask : int
        For public tags and masks: ``tag & mask == value`` selects the attributes. For private
        targets: the group in the high 16 bits.
    creator : str or None
        The Private Creator value (``private`` and ``block``).
    offset : int or None
        The element offset within the block (``private``).
    """

    text: str
    kind: str
    value: int
    mask: int = 0xFFFFFFFF
    creator: str | None = None
    offset: int | None = None

    @property
    def group(self) -> int:
        """The group (for masks, its fixed digits)."""
        return self.value >> 16

    @property
    def specificity(self) -> int:
        """How narrow the target is: the number of fixed hex digits; a private element or a
        public tag 8, a private block 6, a private group 4."""
        if self.kind in ("public", "private"):
            return 8
        if self.kind == "block":
            return 6
        if self.kind == "group":
            return 4
        return sum(1 for shift in range(0, 32, 4) if self.mask >> shift & 0xF)

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity of the attributes it names: a keyword and its tag have the same key."""
        return (self.kind, self.value, self.mask, self.creator, self.offset)

    def matches(self, tag: int) -> bool:
        """Whether a public ``tag`` is one of this target's attributes."""
        if self.kind == "public":
            return tag == self.value
        if self.kind != "mask" or tag >> 16 & 1:
            return False
        return tag & self.mask == self.value

    def overlaps(self, other: Target) -> bool:
        """Whether two public targets (tags or masks) can name the same attribute."""
        if self.kind not in ("public", "mask") or other.kind not in ("public", "mask"):
            return False
        return (self.value ^ other.value) & self.mask & other.mask == 0


@cache
def _keywords() -> tuple[str, ...]:
    return tuple(entry[4] for entry in DicomDictionary.values() if entry[4])


def _hex_mask(digits: str) -> tuple[int, int]:
    value = mask = 0
    for ch in digits:
        value <<= 4
        mask <<= 4
        if ch not in "xX":
            value |= int(ch, 16)
            mask |= 0xF
    return value, mask


def _private_group(group: int, text: str) -> None:
    if group < 0x0009 or group == 0xFFFF:
        raise ConfigError(f"{text}: group {group:04X} holds no private attributes")


@cache
def parse_target(text: str) -> Target:
    """Parse a rule target: a keyword, a tag, a mask or a private attribute by creator.

    Raises
    ------
    ConfigError
        Not a DICOM keyword (with the nearest keywords), or not one of the target forms.

    Examples
    --------
    >>> parse_target("(0008,103e)").text, parse_target("SeriesDescription").key[1] == 0x0008103E
    ('(0008,103E)', True)
    >>> parse_target('(0019, "GEMS_ACQU_01", 9c)').text
    '(0019,"GEMS_ACQU_01",9C)'
    """
    if not isinstance(text, str):
        raise ConfigError(f"a recipe target must be a string, not {text!r}")
    raw = text.strip()
    found = _PRIVATE.match(raw)
    if found:
        group, creator, offset = int(found[1], 16), found[2].strip(), found[3]
        if not group & 1:
            raise ConfigError(f"{raw}: group {group:04X} is public; name it by keyword or tag")
        _private_group(group, raw)
        if not creator:
            raise ConfigError(f"{raw}: the Private Creator is empty")
        if offset in ("xx", "XX", "xX", "Xx"):
            return Target(f'({group:04X},"{creator}",xx)', "block", group << 16, creator=creator)
        number = int(offset, 16)
        return Target(
            f'({group:04X},"{creator}",{number:02X})', "private", group << 16, creator=creator,
            offset=number,
        )  # fmt: skip
    found = _TAG.match(raw) if raw.startswith("(") == raw.endswith(")") else None
    if found or _PLAIN.match(raw):
        group_text, elem_text = (found[1], found[2]) if found else (raw[:4], raw[4:])
        value, mask = _hex_mask(group_text + elem_text)
        shown = f"({group_text.upper()},{elem_text.upper()})".replace("X", "x")
        if mask == 0xFFFFFFFF:
            if value >> 16 & 1:
                raise ConfigError(
                    f"{shown} is private: name private attributes by their creator, as "
                    f'({value >> 16:04X},"CREATOR",{value & 0xFF:02X})'
                )
            return Target(shown, "public", value)
        if mask >> 16 == 0xFFFF and value >> 16 & 1:
            _private_group(value >> 16, shown)
            if mask & 0xFFFF:
                raise ConfigError(
                    f"{shown}: private attributes are named by creator, "
                    f'({value >> 16:04X},"CREATOR",ee), or as a whole group '
                    f"({value >> 16:04X},xxxx)"
                )
            return Target(shown, "group", value, mask)
        return Target(shown, "mask", value, mask)
    if _KEYWORD.match(raw):
        tag = tag_for_keyword(raw)
        if tag is not None:
            return Target(raw, "public", int(tag))
        near = difflib.get_close_matches(raw, _keywords(), n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ConfigError(f"{raw!r} is not a DICOM keyword{hint}")
    raise ConfigError(
        f"cannot read the target {raw!r}: use a keyword (SeriesDescription), a tag (0008,103E), "
        'a mask (0018,xxxx) or a private attribute (0019,"CREATOR",0C)'
    )


def _vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return None


def label(tag: int) -> str:
    """A public tag as a recipe names it: its keyword, else ``(GGGG,EEEE)``."""
    keyword = keyword_for_tag(tag) if tag in DicomDictionary else ""
    return keyword or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _scalars(value: object, what: str) -> list[Scalar]:
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items:
        raise ConfigError(f"{what}: an empty list; to empty the attribute, use the empty action")
    out: list[Scalar] = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ConfigError(f"{what}: a value must be text or a number, not {item!r}")
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigError(f"{what}: {item!r} is not a finite number")
        out.append(item)
    return out


def _replacement(vr: str | None, value: object, what: str) -> Value:
    """The replacement value converted for ``vr`` and validated, or ``ConfigError``."""
    items = _scalars(value, what)
    if vr is None:  # a private attribute: its VR is known only in the instance
        converted: list[Scalar] = list(items)
    elif vr in _INT_VRS:
        try:
            converted = [int(v) for v in items]
        except ValueError as exc:
            raise ConfigError(f"{what}: {vr} needs whole numbers ({exc})") from None
    elif vr in _FLOAT_VRS:
        try:
            converted = [float(v) for v in items]
        except ValueError as exc:
            raise ConfigError(f"{what}: {vr} needs numbers ({exc})") from None
    elif vr in _STRING_VRS:
        converted = [v if isinstance(v, str) else repr(v) for v in items]
    else:
        raise ConfigError(f"{what}: replace cannot write a value of VR {vr}; remove or empty it")
    if vr is not None:
        for item in converted:
            try:
                validate_value(vr, item, _pydicom_config.RAISE)
            except ValueError as exc:
                raise ConfigError(f"{what}: {exc}") from None
    return converted[0] if len(converted) == 1 else tuple(converted)


def _check_public(action: str, target: Target, what: str) -> None:
    if target.kind == "public":
        tag = target.value
        if tag >> 16 == 0x0002:
            raise ConfigError(f"{what}: the File Meta Information is regenerated by dicomflow")
        if tag & 0xFFFF == 0:
            raise ConfigError(f"{what}: group lengths are not written")
        if tag in WRITTEN:
            raise ConfigError(f"{what}: {WRITTEN[tag]} is written by dicomflow (PS3.15 E.1.1)")
        if tag in _PIXELS:
            raise ConfigError(f"{what}: pixel data is handled by Clean Pixel Data, not by rules")
        if tag == _CHARSET and action != "keep":
            raise ConfigError(f"{what}: the character set must stay as the values are encoded")
        return
    if target.kind == "mask":
        covers = [t for t in (*_PIXELS, 0x00020010) if target.matches(t)]
        if covers:
            raise ConfigError(f"{what}: the mask covers Pixel Data or File Meta Information")
        if action != "keep" and target.matches(_CHARSET):
            raise ConfigError(f"{what}: the mask covers Specific Character Set")


@dataclass(frozen=True)
class RecipeRule:
    """One rule: an action on the attributes a target names.

    Parameters
    ----------
    action : str
        ``keep`` (copy the original; a sequence is kept and its items are cleaned by the same
        rules), ``remove``, ``empty`` (zero length; a sequence with no items), ``replace``
        (with ``value``), ``pseudonymise`` (a keyed value: UIDs as the engine replaces them,
        Patient ID and Patient's Name the patient pseudonym, other text ``H`` + 15 base32
        characters; a lookup table's value wins) or ``shift`` (dates and date-times by the
        patient's keyed shift).
    target : str
        What it applies to (see `parse_target`); stored in its normalised form.
    value : str, int, float or tuple of them
        The replacement (``replace`` only), converted for the attribute's VR and validated.
    allow_identifying : bool
        Acknowledges that a ``keep`` retains an attribute the profile does not keep.
    origin : str
        Where the rule comes from (a file, ``command line``), for messages and ``--dry-run``.
    layer : int
        Precedence level: a rule of a higher layer wins (see `Recipe.then`).

    Raises
    ------
    ConfigError
        An unknown action, an unreadable target, a value missing or not valid for the
        attribute's VR, or a target dicomflow does not let rules change (File Meta, group
        lengths, the de-identification records, pixel data).
    """

    action: str
    target: str
    value: Value | None = None
    allow_identifying: bool = False
    origin: str = ""
    layer: int = 0

    def __post_init__(self) -> None:
        where = f"{self.origin}: " if self.origin else ""
        raw_action = str(self.action).strip().lower()
        action = _ALIASES.get(raw_action, raw_action)
        if action not in ACTIONS:
            raise ConfigError(
                f"{where}unknown recipe action {self.action!r}; known: {', '.join(ACTIONS)}"
            )
        try:
            target = parse_target(self.target)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
        what = f"{where}{action} {target.text}"
        _check_public(action, target, what)
        value: Value | None = None
        exact = target.kind in ("public", "private")
        vr = _vr(target.value) if target.kind == "public" else None
        if action == "replace":
            if self.value is None:
                raise ConfigError(f"{what}: replace needs a value")
            if not exact:
                raise ConfigError(f"{what}: replace needs one attribute, not a mask or block")
            if target.kind == "public" and vr is None:
                raise ConfigError(f"{what}: not in the data dictionary, so its VR is unknown")
            value = _replacement(vr, self.value, what)
        elif self.value is not None:
            raise ConfigError(f"{what}: only replace takes a value")
        if action in ("pseudonymise", "shift"):
            if not exact:
                raise ConfigError(f"{what}: {action} needs one attribute, not a mask or block")
            allowed = PSEUDONYM_VRS if action == "pseudonymise" else DATE_VRS
            if target.kind == "public" and vr not in allowed:
                hint = ""
                if action == "shift" and vr == "TM":
                    hint = " (shifts are whole days: times of day do not change)"
                raise ConfigError(
                    f"{what}: {action} applies to {', '.join(sorted(allowed))}, not {vr}{hint}"
                )
        if not isinstance(self.allow_identifying, bool):
            raise ConfigError(f"{what}: allow_identifying must be True or False")
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "target", target.text)
        object.__setattr__(self, "value", value)

    @property
    def parsed(self) -> Target:
        """The parsed target."""
        return parse_target(self.target)

    def describe(self) -> str:
        """``keep SeriesDescription``, ``replace InstitutionName = 'SITE-A'``."""
        if self.action == "replace":
            return f"replace {self.target} = {self.value!r}"
        return f"{self.action} {self.target}"


_SETTINGS = ("name", "allow-identifying", "date-shift-days", *ACTIONS)


def _shift_range(value: object, where: str) -> tuple[int, int]:
    from ._options import DeidOptions

    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) for v in value)
    ):
        raise ConfigError(f"{where}date-shift-days must be two integers [low, high], not {value!r}")
    try:
        return DeidOptions(date_shift_days=(value[0], value[1])).date_shift_days
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


def _layer_rules(mapping: Mapping[str, Any], origin: str, layer: int) -> list[RecipeRule]:
    """The rules of one ``[recipe]`` table."""
    where = f"{origin}: " if origin else ""
    unknown = [k for k in mapping if k not in _SETTINGS and k not in _ALIASES and k != "origin"]
    if unknown:
        near = [m for k in unknown for m in difflib.get_close_matches(k, _SETTINGS, n=1)]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise ConfigError(
            f"{where}unknown recipe settings {sorted(unknown)}{hint}; known: {', '.join(_SETTINGS)}"
        )
    allow = mapping.get("allow-identifying", False)
    allowed: dict[tuple[Any, ...], str] = {}
    if not isinstance(allow, bool):
        if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
            raise ConfigError(f"{where}allow-identifying must be true, false or a list of targets")
        for text in allow:
            try:
                allowed[parse_target(text).key] = text
            except ConfigError as exc:
                raise ConfigError(f"{where}allow-identifying: {exc}") from None
    rules: list[RecipeRule] = []
    for key, targets in mapping.items():
        action = _ALIASES.get(key, key)
        if action not in ACTIONS:
            continue
        if action == "replace":
            if not isinstance(targets, Mapping):
                raise ConfigError(f"{where}replace must be a table: target = value")
            pairs: list[tuple[str, Any]] = list(targets.items())
        else:
            if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
                raise ConfigError(f"{where}{key} must be a list of targets")
            pairs = [(t, None) for t in targets]
        for target, value in pairs:
            rule = RecipeRule(action, target, value, False, origin, layer)
            if action == "keep" and (allow is True or rule.parsed.key in allowed):
                rule = replace(rule, allow_identifying=True)
            rules.append(rule)
    kept = {r.parsed.key for r in rules if r.action == "keep"}
    stray = [text for key, text in allowed.items() if key not in kept]
    if stray:
        raise ConfigError(f"{where}allow-identifying names {stray}, which the recipe does not keep")
    return rules


def _check_layers(rules: Sequence[RecipeRule]) -> None:
    """Two rules of one layer that name the same attributes at the same specificity agree."""
    seen: dict[tuple[int, tuple[Any, ...]], RecipeRule] = {}
    masks: list[RecipeRule] = []
    for rule in rules:
        key = (rule.layer, rule.parsed.key)
        other = seen.get(key)
        if other is not None and (other.action, other.value) != (rule.action, rule.value):
            raise ConfigError(
                f"conflicting rules for {rule.target}: {other.describe()} ({other.origin or '?'}) "
                f"and {rule.describe()} ({rule.origin or '?'}); keep one"
            )
        seen[key] = rule
        if rule.parsed.kind == "mask":
            masks.append(rule)
    for i, first in enumerate(masks):
        for second in masks[i + 1 :]:
            a, b = first.parsed, second.parsed
            if (
                first.layer == second.layer
                and a.specificity == b.specificity
                and a.key != b.key
                and a.overlaps(b)
                and (first.action, first.value) != (second.action, second.value)
            ):
                raise ConfigError(
                    f"the masks {a.text} ({first.action}) and {b.text} ({second.action}) name "
                    "some of the same attributes with equal specificity; make one narrower"
                )


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_-]+", text):
        return text
    if "'" not in text and "\n" not in text:
        return f"'{text}'"
    return _toml_string(text)


def _toml_value(value: object) -> str:
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return _toml_string(value)
    return repr(value)


@dataclass(frozen=True)
class Recipe:
    """Per-attribute rules layered on the PS3.15 profile: what a site keeps, removes, replaces,
    pseudonymises or shifts beyond (or instead of) what the Basic Profile and Options do.

    Precedence, highest first: a later layer (`then`: command-line rules over a recipe file),
    then, within a layer, the most specific target (a keyword, tag or private element over a
    private creator's block, over a mask with fewer ``x``), then the profile Options, then the
    Basic Profile. A keyword applies at every nesting level. Keeping an attribute the profile
    does not keep needs ``allow_identifying`` (on the rule, or for the whole run on the
    `Deidentifier` / `Deidentify`); such attributes are then recorded in each output's
    De-identification Method and in the manifest's counts.

    Parameters
    ----------
    rules : tuple of RecipeRule
        The rules, in any order (precedence does not depend on it); kept sorted by layer
        and action.
    date_shift_days : tuple of int, optional
        The per-patient shift range for ``shift`` rules and the Modified Dates Option,
        overriding the options' range.
    name : str
        A name for the recipe, recorded in the outputs' De-identification Method.

    Examples
    --------
    >>> recipe = Recipe.of(keep=["SeriesDescription"], replace={"InstitutionName": "SITE-A"},
    ...                    allow_identifying=True)
    >>> [rule.describe() for rule in recipe.rules]
    ['keep SeriesDescription', "replace InstitutionName = 'SITE-A'"]
    >>> Recipe.from_toml('[recipe]\\nremove = ["(0008,1030)"]').rules[0].target
    '(0008,1030)'
    """

    rules: tuple[RecipeRule, ...] = ()
    date_shift_days: tuple[int, int] | None = None
    name: str = ""
    _layers: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        rules = tuple(self.rules)
        for rule in rules:
            if not isinstance(rule, RecipeRule):
                raise ConfigError(f"a recipe holds RecipeRule objects, not {rule!r}")
        _check_layers(rules)
        # one canonical order (by layer, then action): the order has no meaning of its own
        rules = tuple(sorted(rules, key=lambda r: (r.layer, ACTIONS.index(r.action))))
        object.__setattr__(self, "rules", rules)
        if self.date_shift_days is not None:
            object.__setattr__(self, "date_shift_days", _shift_range(self.date_shift_days, ""))
        if not isinstance(self.name, str):
            raise ConfigError("a recipe's name must be text")

    def __len__(self) -> int:
        return len(self.rules)

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def of(
        cls,
        *,
        keep: Iterable[str] = (),
        remove: Iterable[str] = (),
        empty: Iterable[str] = (),
        replace: Mapping[str, Value] | None = None,
        pseudonymise: Iterable[str] = (),
        shift: Iterable[str] = (),
        allow_identifying: bool | Iterable[str] = False,
        date_shift_days: tuple[int, int] | None = None,
        name: str = "",
        origin: str = "",
    ) -> Recipe:
        """A one-layer recipe from lists of targets per action.

        ``allow_identifying`` is ``True`` (every ``keep``) or the targets whose ``keep`` may
        retain an attribute the profile does not keep.
        """
        mapping: dict[str, Any] = {
            "keep": list(keep), "remove": list(remove), "empty": list(empty),
            "replace": dict(replace or {}), "pseudonymise": list(pseudonymise),
            "shift": list(shift),
        }  # fmt: skip
        if isinstance(allow_identifying, bool):
            mapping["allow-identifying"] = allow_identifying
        else:
            mapping["allow-identifying"] = list(allow_identifying)
        rules = _layer_rules(mapping, origin, 0)
        return cls(tuple(rules), date_shift_days, name, (origin,))

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], origin: str = "") -> Recipe:
        """A recipe from the ``[recipe]`` table of a recipe file (already parsed)."""
        if not isinstance(mapping, Mapping):
            raise ConfigError(f"{origin or 'recipe'}: the recipe must be a table")
        origin = str(mapping.get("origin", origin) or "")
        name = mapping.get("name", "")
        if not isinstance(name, str):
            raise ConfigError(f"{origin or 'recipe'}: name must be text")
        rules = _layer_rules(mapping, origin or name, 0)
        days = mapping.get("date-shift-days")
        where = f"{origin}: " if origin else ""
        shift = _shift_range(days, where) if days is not None else None
        return cls(tuple(rules), shift, name, (origin or name,))

    @classmethod
    def from_toml(cls, text: str, origin: str = "") -> Recipe:
        """A recipe from the text of a recipe file: one ``[recipe]`` table (see the docs)."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin or 'recipe'}: not valid TOML: {exc}") from None
        extra = [k for k in document if k != "recipe"]
        if "recipe" not in document or extra:
            raise ConfigError(
                f"{origin or 'recipe'}: a recipe file holds one [recipe] table"
                + (f", not {extra}" if extra else "")
            )
        table = document["recipe"]
        if "origin" in table:
            raise ConfigError(f"{origin or 'recipe'}: unknown recipe setting 'origin'")
        return cls.from_mapping(table, origin)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read a TOML recipe file."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"the recipe {os.fspath(path)} cannot be read: {exc}") from None
        return cls.from_toml(text, os.fspath(path))

    @classmethod
    def from_ctp(cls, text: str, origin: str = "") -> Recipe:
        """Convert a CTP DicomAnonymizer script; refused (`ConfigError` listing every rule
        that does not map) unless everything maps. See `convert_ctp` for both parts."""
        from ._recipe_import import convert_ctp

        return convert_ctp(text, origin).require()

    @classmethod
    def from_deid(cls, text: str, origin: str = "") -> Recipe:
        """Convert a pydicom/deid recipe (its ``%header`` section); refused unless everything
        maps. See `convert_deid` for both parts."""
        from ._recipe_import import convert_deid

        return convert_deid(text, origin).require()

    def then(self, other: Recipe) -> Recipe:
        """``self`` with ``other`` layered above it: ``other``'s rules win where both apply.

        Examples
        --------
        >>> file = Recipe.of(remove=["SeriesDescription"], origin="site.toml")
        >>> cli = Recipe.of(keep=["SeriesDescription"], allow_identifying=True, origin="CLI")
        >>> [(r.action, r.layer) for r in file.then(cli).rules]
        [('remove', 0), ('keep', 1)]
        """
        days = other.date_shift_days if other.date_shift_days is not None else self.date_shift_days
        names = " + ".join(n for n in (self.name, other.name) if n)
        if not self.rules:
            return Recipe(other.rules, days, names, other.layers)
        base = len(self.layers)
        lifted = tuple(replace(rule, layer=base + rule.layer) for rule in other.rules)
        return Recipe(self.rules + lifted, days, names, self.layers + other.layers)

    # -- describing ---------------------------------------------------------------------------

    @property
    def layers(self) -> tuple[str, ...]:
        """The origin of each layer, lowest precedence first."""
        count = max(len(self._layers), 1 + max((r.layer for r in self.rules), default=-1))
        return self._layers[:count] + ("",) * (count - len(self._layers))

    @property
    def fingerprint(self) -> str:
        """SHA-256 (12 hex digits) of the rules and the shift range: tells recipes apart."""
        canonical = json.dumps(
            [sorted((r.layer, r.action, r.target, repr(r.value), r.allow_identifying)
                    for r in self.rules), self.date_shift_days],
        )  # fmt: skip
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def identifying(
        self, options: DeidOptions | None = None, *, enforce: bool = False
    ) -> tuple[tuple[str, str], ...]:
        """The ``keep`` rules that retain attributes the profile (Basic Profile with
        ``options``) does not keep: ``(target, why)`` pairs.

        With ``enforce``, those without their own ``allow_identifying`` raise `ConfigError`,
        as the `Deidentifier` does without ``allow_identifying=True``.

        Examples
        --------
        >>> Recipe.of(keep=["SeriesDescription", "Modality"]).identifying()
        (('SeriesDescription', 'profile: X'),)
        """
        from ._options import DeidOptions
        from ._recipe_plan import RecipePlan

        plan = RecipePlan(self, options or DeidOptions(), allow_identifying=not enforce)
        return plan.identifying

    def _layer_mapping(self, layer: int) -> dict[str, Any]:
        rules = [r for r in self.rules if r.layer == layer]
        mapping: dict[str, Any] = {}
        keeps = [r for r in rules if r.action == "keep"]
        allowed = [r.target for r in keeps if r.allow_identifying]
        if keeps and len(allowed) == len(keeps):
            mapping["allow-identifying"] = True
        elif allowed:
            mapping["allow-identifying"] = allowed
        for action in ACTIONS:
            chosen = [r for r in rules if r.action == action]
            if not chosen:
                continue
            if action == "replace":
                mapping[action] = {
                    r.target: list(r.value) if isinstance(r.value, tuple) else r.value
                    for r in chosen
                }
            else:
                mapping[action] = [r.target for r in chosen]
        return mapping

    def to_mapping(self) -> dict[str, Any]:
        """The ``[recipe]`` table of a one-layer recipe (as `from_mapping` reads it)."""
        if len(self.layers) > 1:
            raise ConfigError("a layered recipe has no single [recipe] table; see to_config()")
        mapping: dict[str, Any] = {}
        if self.name:
            mapping["name"] = self.name
        if self.date_shift_days is not None:
            mapping["date-shift-days"] = list(self.date_shift_days)
        mapping.update(self._layer_mapping(0))
        return mapping

    def to_toml(self, comments: Mapping[str, str] | None = None) -> str:
        """The recipe file of a one-layer recipe; ``comments`` maps a target to a note
        written beside it."""
        notes = dict(comments or {})
        mapping = self.to_mapping()
        lines = ["[recipe]"]
        for key in ("name", "date-shift-days", "allow-identifying"):
            if key in mapping:
                lines.append(f"{key} = {_toml_value(mapping[key])}")
        for action in ACTIONS:
            if action not in mapping or action == "replace":
                continue
            lines.append(f"{action} = [")
            for target in mapping[action]:
                note = notes.get(target)
                comment = f"  # {note}" if note else ""
                lines.append(f"    {_toml_string(target)},{comment}")
            lines.append("]")
        if "replace" in mapping:
            lines += ["", "[recipe.replace]"]
            for target, value in mapping["replace"].items():
                note = notes.get(target)
                comment = f"  # {note}" if note else ""
                lines.append(f"{_toml_key(target)} = {_toml_value(value)}{comment}")
        return "\n".join(lines) + "\n"

    def to_config(self) -> dict[str, Any]:
        """A JSON-able description for the manifest; `from_config` rebuilds the recipe."""
        config: dict[str, Any] = {"layers": []}
        if self.name:
            config["name"] = self.name
        if self.date_shift_days is not None:
            config["date-shift-days"] = list(self.date_shift_days)
        for layer, origin in enumerate(self.layers):
            mapping = self._layer_mapping(layer)
            if origin:
                mapping["origin"] = origin
            config["layers"].append(mapping)
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Recipe:
        """Rebuild a recipe from `to_config`'s description, or from one ``[recipe]`` table."""
        if not isinstance(config, Mapping):
            raise ConfigError("a recipe in a pipeline file must be a table or a file path")
        if "layers" not in config:
            return cls.from_mapping(config)
        unknown = set(config) - {"layers", "name", "date-shift-days"}
        if unknown:
            raise ConfigError(f"recipe: unknown settings {sorted(unknown)}")
        recipe = cls()
        for mapping in config["layers"]:
            recipe = recipe.then(cls.from_mapping(mapping))
        days = config.get("date-shift-days")
        shift = _shift_range(days, "recipe: ") if days is not None else None
        return cls(recipe.rules, shift, str(config.get("name", "")), recipe.layers)
