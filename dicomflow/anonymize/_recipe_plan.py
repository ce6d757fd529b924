"""A `Recipe` compiled for one set of options: which rule, if any, decides an attribute, and
whether keeping it retains something the profile would not keep."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ._options import DeidOptions
from ._policy import Policy, policy_for
from ._recipe import Recipe, RecipeRule, label
from ._tables import safe_private

__all__ = ["Hit", "RecipePlan"]


@dataclass(frozen=True)
class Hit:
    """The rule that decides one attribute.

    Attributes
    ----------
    rule : RecipeRule
        The winning rule.
    identifying : bool
        A ``keep`` of an attribute the profile (with the options in force) does not keep.
    label : str
        The attribute as recorded (keyword, ``(GGGG,EEEE)`` or ``(gggg,"CREATOR",ee)``).
    """

    rule: RecipeRule
    identifying: bool
    label: str


def _rank(rule: RecipeRule) -> tuple[int, int]:
    return (rule.layer, rule.parsed.specificity)


def _best(*rules: RecipeRule | None) -> RecipeRule | None:
    found = [r for r in rules if r is not None]
    return max(found, key=_rank) if found else None


def _higher(table: dict, key: object, rule: RecipeRule) -> None:
    old = table.get(key)
    if old is None or rule.layer > old.layer:
        table[key] = rule


class RecipePlan:
    """A recipe ready for the attribute walk.

    Parameters
    ----------
    recipe : Recipe
        The rules.
    options : DeidOptions
        The profile Options: they decide what the Basic Profile keeps, hence which ``keep``
        rules retain identifying attributes.
    allow_identifying : bool
        Allow every such ``keep`` (``--allow-identifying``); otherwise only rules carrying
        ``allow_identifying`` may.

    Raises
    ------
    ConfigError
        A ``keep`` retains attributes the profile does not keep and is not allowed to; the
        message names every one.
    """

    def __init__(
        self, recipe: Recipe, options: DeidOptions, *, allow_identifying: bool = False
    ) -> None:
        self.recipe = recipe
        self._policy: Policy = policy_for(options)
        self._safe = safe_private() if options.retain_safe_private else {}
        self._exact: dict[int, RecipeRule] = {}
        self._masks: list[RecipeRule] = []
        self._private: dict[tuple[int, str, int], RecipeRule] = {}
        self._blocks: dict[tuple[int, str], RecipeRule] = {}
        self._groups: dict[int, RecipeRule] = {}
        self._cache: dict[int, Hit | None] = {}
        for rule in recipe.rules:
            target = rule.parsed
            if target.kind == "public":
                _higher(self._exact, target.value, rule)
            elif target.kind == "mask":
                self._masks.append(rule)
            elif target.kind == "private":
                assert target.creator is not None and target.offset is not None
                _higher(self._private, (target.group, target.creator, target.offset), rule)
            elif target.kind == "block":
                assert target.creator is not None
                _higher(self._blocks, (target.group, target.creator), rule)
            else:
                _higher(self._groups, target.group, rule)
        self._masks.sort(key=_rank, reverse=True)
        self.has_private = bool(self._private or self._blocks or self._groups)
        identifying = [(rule, why) for rule in recipe.rules if (why := self._retains(rule))]
        #: ``(target, why)`` of every ``keep`` that retains what the profile does not keep.
        self.identifying: tuple[tuple[str, str], ...] = tuple(
            (rule.target, why) for rule, why in identifying
        )
        refused = [
            f"{rule.target} ({why})"
            for rule, why in identifying
            if not (allow_identifying or rule.allow_identifying)
        ]
        if refused:
            raise ConfigError(
                "the recipe keeps attributes the de-identification profile does not keep: "
                f"{', '.join(refused)}. Keeping them needs an explicit allowance "
                "(--allow-identifying, allow_identifying=True, or allow-identifying in the "
                "recipe); they are then recorded in each output's De-identification Method "
                "and in the manifest"
            )

    def _retains(self, rule: RecipeRule) -> str:
        """Why a ``keep`` retains identifying attributes; empty when it does not."""
        if rule.action != "keep":
            return ""
        target = rule.parsed
        if target.kind == "public":
            code = self._policy.code(target.value)
            return "" if code == "K" else f"profile: {code}"
        if target.kind == "private":
            key = (target.group, target.creator, target.offset)
            if key in self._safe:
                return ""
            return "private, not in Table E.3.10-1" if self._safe else "private: profile X"
        if target.kind == "mask":
            return "a mask: may hold attributes the profile removes"
        return "a private block or group: profile X"

    def public(self, tag: int) -> Hit | None:
        """The rule deciding a public attribute, or ``None`` (the profile decides)."""
        try:
            return self._cache[tag]
        except KeyError:
            pass
        exact = self._exact.get(tag)
        mask = next((r for r in self._masks if r.parsed.matches(tag)), None)
        rule = _best(exact, mask)
        hit = None
        if rule is not None:
            retains = rule.action == "keep" and self._policy.code(tag) != "K"
            hit = Hit(rule, retains, label(tag))
        self._cache[tag] = hit
        return hit

    def private(self, group: int, creator: str | None, offset: int) -> Hit | None:
        """The rule deciding a private attribute (``creator`` ``None``: none reserves its
        block), or ``None``."""
        exact = block = None
        if creator is not None:
            exact = self._private.get((group, creator, offset))
            block = self._blocks.get((group, creator))
        rule = _best(exact, block, self._groups.get(group))
        if rule is None:
            return None
        name = f'({group:04X},"{creator}",{offset:02X})' if creator is not None else rule.target
        retains = rule.action == "keep" and (group, creator, offset) not in self._safe
        return Hit(rule, retains, name)

    @property
    def summary(self) -> str:
        """``dicomflow recipe <name> sha256:<12 hex> (N rules)``, for De-identification
        Method."""
        name = f" {self.recipe.name}" if self.recipe.name else ""
        count = len(self.recipe.rules)
        return f"recipe{name} sha256:{self.recipe.fingerprint} ({count} rules)"
