"""What the engine would do to each attribute of an instance, and why (``deid --dry-run``).

`explain` walks an instance with the same rules as `Deidentifier` (same policy, same compound
code resolution, same private-attribute and structured-content handling) and reports one row
per attribute at every nesting level, without de-identifying anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset

from ._options import DeidOptions
from ._policy import CURVE_GROUPS, KEEP_REFS, OVERLAY_GROUPS, UNLISTED_TEXT, policy_for, resolve
from ._recipe import Recipe
from ._recipe_plan import Hit, RecipePlan
from ._structured import STRUCTURED_SEQUENCES, content_overrides
from ._tables import IodTypes, ProfileRow, iod_for_sop_class, iod_types, profile_rows, safe_private

__all__ = ["AttributeAction", "explain"]

MEANINGS = {
    "X": "remove",
    "Z": "empty",
    "D": "dummy",
    "K": "keep",
    "C": "clean",
    "U": "new UID",
    KEEP_REFS: "keep, UIDs inside replaced",
}
#: The action code and words of each recipe action (the code is the one it is counted as).
RULE_ACTIONS = {
    "keep": ("K", "keep"),
    "remove": ("X", "remove"),
    "empty": ("Z", "empty"),
    "replace": ("D", "replace"),
    "pseudonymise": ("U", "pseudonym"),
    "shift": ("C", "shift"),
}
_MEASURED_VALUE_SEQUENCE = 0x0040A300
_PATIENT_NAME = 0x00100010
_PATIENT_ID = 0x00100020


@dataclass(frozen=True)
class AttributeAction:
    """One attribute of an instance and the action the engine applies to it.

    Attributes
    ----------
    attribute : str
        Sequence path, tag and keyword: ``(0008,1140)[0]>(0008,1155) ReferencedSOPInstanceUID``.
    action : str
        The resolved code (``X``, ``Z``, ``D``, ``K``, ``C``, ``U``, or ``U*``).
    meaning : str
        The code in words (``remove``, ``dummy``, ...).
    reason : str
        The table row, option or default that decided it.
    """

    attribute: str
    action: str
    meaning: str
    reason: str


@cache
def _rows() -> Mapping[int, ProfileRow]:
    return {row.value: row for row in profile_rows() if row.kind == "exact"}


def _label(prefix: str, tag: int) -> str:
    entry = DicomDictionary.get(tag)
    keyword = entry[4] if entry is not None else ""
    return f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword}".rstrip()


def _rule_reason(hit: Hit) -> str:
    rule = hit.rule
    where = rule.origin or "recipe"
    text = f"{where}: {rule.describe()}"
    if hit.identifying:
        text += " (identifying; allowed, recorded)"
    return text


class _Explainer:
    def __init__(self, ds: Dataset, options: DeidOptions, plan: RecipePlan | None) -> None:
        self.options = options
        self.plan = plan
        self.policy = policy_for(options)
        self.safe = safe_private() if options.retain_safe_private else {}
        sop_class = ds.get("SOPClassUID")
        self.ciod = iod_for_sop_class(str(sop_class)) if sop_class else None
        self.types: IodTypes | None = iod_types(self.ciod)
        self.present = self.types.present_modules(set(ds.keys())) if self.types else frozenset()
        self.rows: list[AttributeAction] = []

    def add(self, label: str, code: str, reason: str) -> None:
        self.rows.append(AttributeAction(label, code, MEANINGS.get(code, code), reason))

    def walk(self, ds: Dataset, path: tuple[int, ...], prefix: str, overrides=None) -> None:
        creators: dict[tuple[int, int], str] = {}
        for tag in list(ds.keys()):
            if tag >> 16 & 1:
                self._private(ds, tag, path, prefix, creators)
                continue
            hit = self.plan.public(tag) if self.plan is not None else None
            if hit is not None:
                self._rule(ds, tag, hit, path, _label(prefix, tag))
                continue
            raw = (overrides or {}).get(tag) or self.policy.code(tag)
            code = raw
            if len(raw) > 1 or raw == UNLISTED_TEXT:
                code = resolve(raw, tag, path, self.types, self.present)
            label = _label(prefix, tag)
            reason = self._reason(tag, raw, code, path, bool(overrides and tag in overrides))
            if code in ("Z", "D") and (tag == _PATIENT_ID or (tag == _PATIENT_NAME and not path)):
                self.rows.append(AttributeAction(label, code, "pseudonym", reason))
            else:
                self.add(label, code, reason)
            self._items(ds, tag, code, path, label)

    def _rule(self, ds: Dataset, tag: int, hit: Hit, path: tuple[int, ...], label: str) -> None:
        code, meaning = RULE_ACTIONS[hit.rule.action]
        self.rows.append(AttributeAction(label, code, meaning, _rule_reason(hit)))
        if code == "K":
            self._items(ds, tag, code, path, label)

    def _items(self, ds: Dataset, tag: int, code: str, path: tuple[int, ...], label: str):
        try:
            elem = ds[tag]
        except Exception:  # noqa: BLE001 - the engine fails such an instance
            return
        if elem.VR != "SQ" or code in ("X", "Z"):
            return
        keyword = elem.keyword or ""
        dummies = code == "D" and (
            keyword.endswith("CodeSequence") or tag == _MEASURED_VALUE_SEQUENCE
        )
        structured = self.options.clean_structured_content and tag in STRUCTURED_SEQUENCES
        for i, item in enumerate(elem.value or ()):
            prefix = f"{label}[{i}]>"
            if dummies:
                for inner in item.keys():
                    self.add(_label(prefix, inner), "D", "inside a code sequence given dummies")
                continue
            overrides = content_overrides(item, self.options) if structured else None
            if structured and overrides is None:
                self.add(prefix.rstrip(">"), "X", "Table E.3.4-1: content item removed")
                continue
            self.walk(item, (*path, tag), prefix, overrides)

    def _private(self, ds: Dataset, tag: int, path, prefix: str, creators) -> None:
        group, number = tag >> 16, tag & 0xFFFF
        label = f"{prefix}({group:04X},{number:04X}) private"
        if 0x10 <= number <= 0xFF:
            try:
                value = ds[tag].value
            except Exception:  # noqa: BLE001
                value = ""
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            creators[(group, number)] = str(value or "").strip()
            keeps = any(
                (self.safe and (group, creators[(group, number)], low) in self.safe)
                or self._ruled(ds, group, number, creators[(group, number)], low)
                for low in range(256)
            )
            why = "creator of a block with kept attributes" if keeps else "private creator"
            self.add(f"{label} creator", "K" if keeps else "X", why)
            return
        creator = creators.get((group, number >> 8))
        hit = self.plan.private(group, creator, number & 0xFF) if self.plan is not None else None
        if hit is not None:
            self._rule(ds, tag, hit, path, f"{label} {creator or ''}".rstrip())
        elif self.safe and creator is not None and (group, creator, number & 0xFF) in self.safe:
            self.add(f"{label} {creator}", "K", "Table E.3.10-1 (Retain Safe Private)")
            self._items(ds, tag, "K", path, f"{label} {creator}")
        elif self.safe:
            self.add(f"{label} {creator or ''}".rstrip(), "X", "not in Table E.3.10-1")
        else:
            self.add(f"{label} {creator or ''}".rstrip(), "X", "private attribute (Basic Profile)")

    def _ruled(self, ds: Dataset, group: int, block: int, creator: str, low: int) -> bool:
        """A recipe rule other than remove applies to this present private attribute."""
        if self.plan is None or (group << 16 | block << 8 | low) not in ds:
            return False
        hit = self.plan.private(group, creator, low)
        return hit is not None and hit.rule.action != "remove"

    def _reason(self, tag: int, raw: str, code: str, path, override: bool) -> str:
        if override:
            return f"Table E.3.4-1 content item value ({raw})"
        group = tag >> 16
        row = _rows().get(tag)
        if row is None and (group in OVERLAY_GROUPS or group in CURVE_GROUPS):
            which = "(60xx" if group in OVERLAY_GROUPS else "(50xx"
            return f"Table E.1-1 repeating group row {which},...)"
        if row is not None:
            text = f"Table E.1-1 '{row.name}': Basic {row.basic}"
            cells = [(s.name, row.options[s.column]) for s in self.options.selected
                     if s.column is not None and s.column in row.options]  # fmt: skip
            if cells:
                text += "; " + ", ".join(f"{name} {cell}" for name, cell in cells)
            if "/" in raw:
                text += "; " + self._type_text(tag, path)
            return text
        return self._default_reason(tag, raw, path)

    def _type_text(self, tag: int, path) -> str:
        if self.types is None:
            return "IOD unknown: first letter"
        kind = self.types.strictest((*path, tag), self.present)
        if kind is None:
            return f"not in the {self.ciod} IOD: removed"
        return f"Type {kind} in the {self.ciod} IOD"

    def _default_reason(self, tag: int, raw: str, path) -> str:
        entry = DicomDictionary.get(tag)
        if entry is None:
            return "not in Table E.1-1 nor the data dictionary: unknown meaning"
        vr, retired = entry[0].split(" ")[0], entry[3]
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0 or group in (0x0002, 0x0004):
            return "group length, File Meta or DICOMDIR attribute: regenerated or removed"
        if retired:
            return "retired attribute not in Table E.1-1"
        if tag in self.policy.keep_text:
            return "dicomflow keep-list (needed to read the data, identifies no one)"
        if raw == UNLISTED_TEXT:
            kind = self.types.unlisted.get(tag) if self.types is not None else None
            need = f"Type {kind} in the IOD" if kind else "not required by the IOD"
            return f"{vr} attribute not in Table E.1-1 ({need})"
        if vr == "UI":
            return "UID not in Table E.1-1" + (": a class, kept" if raw == "K" else "")
        if vr == "UN":
            return "VR UN: unknown content"
        if vr == "SQ":
            return "sequence not in Table E.1-1: items cleaned by the same rules"
        if raw == "C":
            return f"{vr} date or time not in Table E.1-1 (Modified Dates)"
        return f"{vr} attribute not in Table E.1-1: image structure, number or code"


def explain(
    ds: Dataset,
    options: DeidOptions | None = None,
    *,
    recipe: Recipe | None = None,
    allow_identifying: bool = False,
) -> list[AttributeAction]:
    """The action for every attribute of ``ds`` (at every nesting level), with the reason.

    With a ``recipe``, an attribute a rule decides shows the rule and where it came from as
    the reason (``site.toml: keep SeriesDescription``).

    Raises
    ------
    ConfigError
        The recipe keeps identifying attributes without ``allow_identifying`` (as the engine
        would refuse it).

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.PatientName, ds.Rows = "Doe^Jane", 64
    >>> [(r.attribute, r.action) for r in explain(ds)]
    [('(0010,0010) PatientName', 'Z'), ('(0028,0010) Rows', 'K')]
    """
    options = options or DeidOptions()
    plan = None
    if recipe:
        plan = RecipePlan(recipe, options, allow_identifying=allow_identifying)
    explainer = _Explainer(ds, options, plan)
    explainer.walk(ds, (), "")
    return explainer.rows
