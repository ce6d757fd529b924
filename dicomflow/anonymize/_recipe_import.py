"""Convert other tools' de-identification scripts into a `Recipe`: CTP DicomAnonymizer scripts
and pydicom/deid recipes. What maps is converted; what does not is listed, and refused.

The converted recipe is layered on dicomflow's profile, not on the other tool's defaults: an
attribute the script does not name (or names in a disabled entry) gets the Basic Profile's
action. See ``docs/deidentification.md`` (Recipes) for the mapping tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

from ..errors import ConfigError
from ._options import DeidOptions
from ._recipe import WRITTEN, Recipe, RecipeRule, label, parse_target
from ._recipe_plan import RecipePlan

__all__ = ["Conversion", "Unmapped", "convert_ctp", "convert_deid"]


@dataclass(frozen=True)
class Unmapped:
    """A rule of the source script that has no recipe form.

    Attributes
    ----------
    line : int
        Its line in the source (1-based).
    text : str
        The rule as written (cut to 100 characters).
    reason : str
        Why it does not map, and what to do instead where there is something.
    """

    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.text}: {self.reason}"


@dataclass(frozen=True)
class Conversion:
    """The result of converting a script: the recipe of what maps, and what does not.

    Attributes
    ----------
    recipe : Recipe
        The rules that map (usable on its own only when `unmapped` is empty).
    unmapped : tuple of Unmapped
        Every rule that does not map.
    notes : tuple of str
        Rules that need no recipe rule, because dicomflow does the same by itself (the
        de-identification records, removing private groups), or that were ignored (disabled
        entries), and the rules another one overrode.
    source : str
        What was converted (``CTP DicomAnonymizer script``, ``deid recipe``).
    origin : str
        Where it came from (a path), for messages.
    """

    recipe: Recipe
    unmapped: tuple[Unmapped, ...]
    notes: tuple[str, ...]
    source: str
    origin: str = ""
    comments: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """Everything mapped."""
        return not self.unmapped

    def require(self) -> Recipe:
        """The recipe, or `ConfigError` listing every rule that does not map."""
        if self.unmapped:
            where = f"{self.origin}: " if self.origin else ""
            lines = "\n  ".join(str(u) for u in self.unmapped)
            raise ConfigError(
                f"{where}{len(self.unmapped)} rules of the {self.source} have no dicomflow "
                f"recipe form, so it is refused (remove or rewrite them):\n  {lines}"
            )
        return self.recipe

    def to_toml(self) -> str:
        """The recipe file, with comments naming the source of each rule and the notes."""
        head = [f"# converted by dicomflow from the {self.source}" + (
            f" {self.origin}" if self.origin else ""
        )]  # fmt: skip
        head.append("# attributes it does not name get dicomflow's PS3.15 profile action")
        head += [f"# note: {note}" for note in self.notes]
        return "\n".join(head) + "\n\n" + self.recipe.to_toml(self.comments)


def _cut(text: str, limit: int = 100) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Builder:
    """Collects converted rules, one per attribute, with their source lines."""

    def __init__(self, source: str, origin: str) -> None:
        self.source = source
        self.origin = origin or source
        self.rules: dict[tuple, tuple[RecipeRule, int, str]] = {}
        self.unmapped: list[Unmapped] = []
        self.notes: list[str] = []
        self.days: tuple[int, int] | None = None
        self.days_line = 0

    def refuse(self, line: int, text: str, reason: str) -> None:
        self.unmapped.append(Unmapped(line, _cut(text), reason))

    def rule(
        self,
        line: int,
        text: str,
        action: str,
        target: str,
        value: Any = None,
        days: int | None = None,
    ) -> None:
        """Add a converted rule (``days``: the fixed shift it implies), or refuse it."""
        try:
            rule = RecipeRule(action, target, value, origin=self.origin)
        except ConfigError as exc:
            self.refuse(line, text, str(exc).removeprefix(f"{self.origin}: "))
            return
        key = rule.parsed.key
        if key in self.rules:
            first = self.rules[key][1]
            self.refuse(line, text, f"a second rule for {rule.target} (the first: line {first})")
            return
        if days is not None and not self.shift_days(line, text, days):
            return
        self.rules[key] = (rule, line, text)

    def shift_days(self, line: int, text: str, days: int) -> bool:
        if self.days is None:
            self.days, self.days_line = (days, days), line
            return True
        if self.days != (days, days):
            self.refuse(
                line, text,
                f"a date increment of {days} days, but line {self.days_line} uses "
                f"{self.days[0]}: one recipe has one shift range",
            )  # fmt: skip
            return False
        return True

    def finish(self, prefix: str) -> Conversion:
        rules = tuple(rule for rule, _, _ in self.rules.values())
        comments = {rule.target: f"{prefix} line {line}: {_cut(text, 60)}"
                    for rule, line, text in self.rules.values()}  # fmt: skip
        try:
            recipe = Recipe(rules, self.days, "", (self.origin,))
        except ConfigError as exc:
            self.refuse(0, "(the converted rules)", str(exc))
            recipe = Recipe()
        else:
            plan = RecipePlan(recipe, DeidOptions(), allow_identifying=True)
            for target, why in plan.identifying:
                comments[target] += f"; identifying ({why}): needs --allow-identifying"
        return Conversion(recipe, tuple(self.unmapped), tuple(self.notes), self.source,
                          self.origin if self.origin != self.source else "", comments)  # fmt: skip


# -- CTP DicomAnonymizer --------------------------------------------------------------------

_CTP_SOURCE = "CTP DicomAnonymizer script"
_CALL = re.compile(r"^@([A-Za-z]+)\((.*)\)$", re.S)
_CTP_PRIVATE = re.compile(r"^([0-9A-Fa-f]{4})\[([^\]]+)\]([0-9A-Fa-f]{2})$")
_CTP_REASONS = {
    "lookup": "a lookup table: give it to dicomflow with --lookup",
    "date": "the date of the run: not deterministic",
    "time": "the time of the run: not deterministic",
    "always": "creates the attribute when missing: recipes do not add attributes",
    "require": "creates the attribute when missing: recipes do not add attributes",
    "append": "appends to the value: recipes replace whole values",
    "hashptid": "derived from another attribute",
    "if": "conditional: recipes have no conditions",
    "select": "conditional: recipes have no conditions",
    "quarantine": "a filter: dicomflow fails instances it cannot de-identify, by itself",
    "skip": "a filter: select instances with dfl.filter before de-identifying",
    "blank": "a value of blanks: use @empty() or a literal replacement",
    "contents": "derived from another attribute",
    "encrypt": "encryption: dicomflow creates no Encrypted Attributes Sequence",
}


def _ctp_tag(text: str) -> tuple[str | None, str]:
    """The recipe target of a CTP ``t`` attribute, or ``None`` and why not."""
    text = text.strip()
    if re.fullmatch(r"[0-9A-Fa-f]{8}", text):
        tag = int(text, 16)
        if tag >> 16 & 1:
            return None, "a private element named by tag alone: CTP names it gggg[Creator]ee"
        return label(tag), ""
    found = _CTP_PRIVATE.match(text)
    if found:
        return f'({found[1].upper()},"{found[2].strip()}",{found[3].upper()})', ""
    return None, f"cannot read the tag {text!r}"


def _ctp_element(
    b: _Builder, line: int, text: str, target: str, script: str, params: Mapping[str, str]
) -> None:
    try:
        parsed = parse_target(target)
    except ConfigError as exc:
        b.refuse(line, text, str(exc))
        return
    tag = parsed.value if parsed.kind == "public" else None
    if tag in WRITTEN:
        b.notes.append(f"line {line}: {WRITTEN[tag]} is written by dicomflow itself")
        return
    if not script:
        b.refuse(line, text, "an enabled entry without a script: no action to convert")
        return
    if "@" not in script:
        b.rule(line, text, "replace", target, script)
        return
    call = _CALL.match(script)
    if call is None or "(" in call[2] or ")" in call[2]:
        first = re.match(r"@([A-Za-z]+)", script)
        reason = _CTP_REASONS.get(first[1].lower(), "") if first else ""
        b.refuse(line, text, reason or "a script combining functions: no recipe form")
        return
    function = call[1]
    args = [a.strip() for a in call[2].split(",")] if call[2].strip() else []
    simple = {"keep": "keep", "remove": "remove", "empty": "empty", "process": "keep"}
    if function in simple and not args:
        b.rule(line, text, simple[function], target)
    elif function == "hashuid" and len(args) == 2 and args[1] == "this":
        b.rule(line, text, "pseudonymise", target)
    elif function in ("hash", "hashname") and args[:1] == ["this"]:
        b.rule(line, text, "pseudonymise", target)
    elif function == "incrementdate" and len(args) == 2 and args[0] == "this":
        amount = params.get(args[1][1:], "") if args[1].startswith("@") else args[1]
        try:
            days = int(amount)
        except ValueError:
            b.refuse(line, text, f"the increment {args[1]} is not a whole number of days")
            return
        b.rule(line, text, "shift", target, days=days)
    elif function == "param" and len(args) == 1 and args[0].startswith("@"):
        if args[0][1:] not in params:
            b.refuse(line, text, f"the script has no parameter {args[0][1:]}")
        else:
            b.rule(line, text, "replace", target, params[args[0][1:]])
    elif function in ("hashuid", "hash", "hashname", "incrementdate"):
        b.refuse(line, text, f"@{function}() of another attribute or value: no recipe form")
    else:
        reason = _CTP_REASONS.get(function.lower(), f"@{function}() has no recipe form")
        b.refuse(line, text, reason)


@dataclass
class _XmlNode:
    name: str
    attrs: dict[str, str]
    line: int
    text: str = ""
    children: list[_XmlNode] = field(default_factory=list)


def _parse_xml(text: str, where: str) -> _XmlNode:
    """A small XML tree with line numbers; DOCTYPEs (and so entity tricks) are refused."""
    parser = expat.ParserCreate()
    stack: list[_XmlNode] = []
    roots: list[_XmlNode] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        node = _XmlNode(name, attrs, parser.CurrentLineNumber)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(name: str) -> None:
        stack.pop()

    def data(chunk: str) -> None:
        if stack:
            stack[-1].text += chunk

    def doctype(*_args: object) -> None:
        raise ConfigError(f"{where}: a DOCTYPE is not allowed in a CTP script")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    parser.StartDoctypeDeclHandler = doctype
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise ConfigError(f"{where}: not a readable XML file: {exc}") from None
    if len(roots) != 1 or roots[0].name != "script":
        raise ConfigError(f"{where}: not a CTP DicomAnonymizer script (no <script> root)")
    return roots[0]


def convert_ctp(text: str, origin: str = "") -> Conversion:
    """Convert a CTP DicomAnonymizer script (``<script><e en="T" t="00100010">...``).

    Enabled ``<e>`` entries map by their script: ``@keep()``, ``@remove()``, ``@empty()``,
    ``@process()`` (keep: items cleaned by the same rules), ``@hashuid(@UIDROOT,this)``,
    ``@hash(this,n)`` and ``@hashname(this,...)`` (pseudonymise), ``@incrementdate(this,
    @DATEINC)`` (shift, with the increment as a fixed shift range), ``@param(@NAME)`` and
    literal text (replace). ``<k>`` keeps a group (a mask). ``<r>`` removing private groups,
    curves and overlays needs no rule (the Basic Profile removes them). Disabled entries are
    ignored. Everything else is listed in `Conversion.unmapped`.

    Raises
    ------
    ConfigError
        Not readable XML, or not a DicomAnonymizer script.
    """
    where = origin or _CTP_SOURCE
    root = _parse_xml(text, where)
    b = _Builder(_CTP_SOURCE, origin)
    params = {n.attrs.get("t", ""): n.text.strip() for n in root.children if n.name == "p"}
    disabled = 0
    for node in root.children:
        attrs = " ".join(f'{k}="{v}"' for k, v in node.attrs.items())
        shown = f"<{node.name} {attrs}>{node.text.strip()}".replace(" >", ">")
        if node.name == "p":
            continue
        if node.name not in ("e", "k", "r"):
            b.refuse(node.line, shown, f"<{node.name}> is not a DicomAnonymizer entry")
            continue
        if node.attrs.get("en", "T") != "T":
            disabled += 1
            continue
        t = node.attrs.get("t", "")
        if node.name == "e":
            target, why = _ctp_tag(t)
            if target is None:
                b.refuse(node.line, shown, why)
            else:
                _ctp_element(b, node.line, shown, target, node.text.strip(), params)
        elif node.name == "k":
            if re.fullmatch(r"[0-9A-Fa-f]{4}", t.strip()):
                b.rule(node.line, shown, "keep", f"({t.strip().upper()},xxxx)")
            else:
                b.refuse(node.line, shown, f"cannot read the group {t!r}")
        elif t in ("privategroups", "curves", "overlays"):
            b.notes.append(f"line {node.line}: remove {t}: the Basic Profile removes them")
        elif t == "unspecifiedelements":
            b.refuse(node.line, shown, "removing every attribute the script does not name has "
                     "no recipe form (the profile decides those attributes)")  # fmt: skip
        elif t == "keepsafeprivateelements":
            b.refuse(node.line, shown, "choose the retain-safe-private option instead")
        else:
            b.refuse(node.line, shown, f"unknown global rule {t!r}")
    if disabled:
        b.notes.append(f'{disabled} disabled entries (en="F") ignored: the profile decides them')
    return b.finish("CTP")


# -- pydicom/deid ---------------------------------------------------------------------------

_DEID_SOURCE = "deid recipe"
#: deid's own precedence when several actions name one field (recipe-headers docs).
_DEID_ORDER = ("KEEP", "ADD", "REPLACE", "JITTER", "REMOVE", "BLANK")
_DEID_ACTIONS = {"KEEP": "keep", "REMOVE": "remove", "BLANK": "empty", "REPLACE": "replace",
                 "JITTER": "shift"}  # fmt: skip
_EXPANDERS = ("contains:", "notcontains:", "startswith:", "endswith:", "except:", "allexcept:",
              "select:", "fields:", "values:", "equals:", "notequals:")  # fmt: skip
_DYNAMIC = ("var:", "func:", "deid_func:")


def convert_deid(text: str, origin: str = "") -> Conversion:
    """Convert a pydicom/deid recipe (``FORMAT dicom``, ``%header``, ``KEEP``/``REMOVE``/...).

    In ``%header``: ``KEEP``, ``REMOVE``, ``BLANK`` (empty), ``REPLACE field value`` (a literal
    value) and ``JITTER field days`` (shift, with the days as a fixed shift range) map, for
    fields named by keyword or tag. Where several actions name one field, deid's precedence
    (KEEP > ADD > REPLACE > JITTER > REMOVE > BLANK) picks one. ``ADD`` of Patient Identity
    Removed needs no rule. Field expanders (``contains:``, ``ALL`` ...), ``var:``/``func:``
    values, other ``ADD`` lines and the ``%filter``, ``%fields`` and ``%values`` sections are
    listed in `Conversion.unmapped`.

    Raises
    ------
    ConfigError
        The text does not start with ``FORMAT dicom``.
    """
    b = _Builder(_DEID_SOURCE, origin)
    section = ""
    seen_format = False
    chosen: dict[tuple, tuple[int, int, str, str, str, str | None]] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split(None, 2)
        if not seen_format:
            if len(words) != 2 or words[0].upper() != "FORMAT" or words[1].lower() != "dicom":
                raise ConfigError(
                    f"{origin or _DEID_SOURCE}: not a deid recipe for DICOM "
                    f"(the first line must be 'FORMAT dicom', not {line!r})"
                )
            seen_format = True
            continue
        if words[0].upper() == "FORMAT":
            section = "format"
            b.refuse(number, line, "another FORMAT: only DICOM headers are converted")
            continue
        if line.startswith("%"):
            section = words[0][1:].lower()
            if section not in ("header", "labels"):
                b.refuse(number, line, f"the %{section} section has no recipe form")
            continue
        if section == "labels":
            b.notes.append(f"line {number}: label {line!r} ignored")
            continue
        if section != "header":
            b.refuse(number, line, f"inside the %{section or '(none)'} section")
            continue
        action = words[0].upper()
        field_name = words[1] if len(words) > 1 else ""
        value = words[2].strip() if len(words) > 2 else None
        if action not in _DEID_ORDER:
            b.refuse(number, line, f"unknown action {words[0]!r}")
            continue
        if not field_name:
            b.refuse(number, line, "no field")
            continue
        lowered = field_name.lower()
        if lowered in ("all", "allfields") or lowered.startswith(_EXPANDERS):
            b.refuse(number, line, "a field expander: name each attribute (by keyword or tag)")
            continue
        try:
            target = parse_target(field_name)
        except ConfigError as exc:
            b.refuse(number, line, str(exc))
            continue
        if action == "ADD":
            if target.kind == "public" and target.value in WRITTEN:
                b.notes.append(f"line {number}: {WRITTEN[target.value]} is written by dicomflow")
            else:
                b.refuse(number, line, "ADD: recipes do not add attributes")
            continue
        if value is not None and value.startswith(_DYNAMIC):
            b.refuse(number, line, "a var:/func: value is computed by deid's Python side")
            continue
        if action in ("KEEP", "REMOVE", "BLANK") and value is not None:
            b.refuse(number, line, f"{action} takes no value")
            continue
        if action in ("REPLACE", "JITTER") and value is None:
            b.refuse(number, line, f"{action} needs a value")
            continue
        rank = _DEID_ORDER.index(action)
        entry = (rank, number, line, action, target.text, value)
        other = chosen.get(target.key)
        if other is None or rank < other[0]:
            if other is not None:
                b.notes.append(f"line {other[1]}: {other[3]} overridden by {action} on line "
                               f"{number} (deid's precedence)")  # fmt: skip
            chosen[target.key] = entry
        elif rank == other[0]:
            b.refuse(number, line, f"a second {action} for {target.text} (line {other[1]})")
        else:
            b.notes.append(f"line {number}: {action} overridden by {other[3]} on line "
                           f"{other[1]} (deid's precedence)")  # fmt: skip
    if not seen_format:
        raise ConfigError(f"{origin or _DEID_SOURCE}: empty (no 'FORMAT dicom' line)")
    for _rank, number, line, action, target_text, value in sorted(
        chosen.values(), key=lambda e: e[1]
    ):
        days = None
        if action == "JITTER":
            try:
                days = int(value or "")
            except ValueError:
                b.refuse(number, line, f"the jitter {value!r} is not a whole number of days")
                continue
            value = None
        b.rule(number, line, _DEID_ACTIONS[action], target_text, value, days=days)
    return b.finish("deid")
