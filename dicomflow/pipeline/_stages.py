"""Built-in stages: ``filter`` on the catalog before any file is read, ``map`` of a function."""

from __future__ import annotations

import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ._instance import Instance

__all__ = ["Filter", "Map", "filter", "map"]


@dataclass(frozen=True)
class Filter:
    """Keep the catalog rows an expression selects; the others are skipped with this reason.

    ``expr`` is a polars expression, or a SQL expression string (``"Modality = 'CT'"``) as in
    pipeline files. Filters read only the catalog: they run before any file is opened, whatever
    their place in the chain.
    """

    expr: Any
    name: str = "filter"

    def expression(self) -> Any:
        import polars as pl

        if isinstance(self.expr, str):
            try:
                return pl.sql_expr(self.expr)
            except Exception as exc:  # noqa: BLE001 - polars' parser errors vary by version
                raise ConfigError(f"filter {self.expr!r} is not a valid expression: {exc}") from exc
        return self.expr

    def describe(self) -> str:
        return self.expr if isinstance(self.expr, str) else str(self.expr)

    def config(self) -> dict[str, Any]:
        if isinstance(self.expr, str):
            return {"type": "filter", "expr": self.expr}
        return {"type": "filter", "polars_json": self.expr.meta.serialize(format="json")}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Filter:
        if "expr" in config:
            return cls(config["expr"])
        import polars as pl

        return cls(pl.Expr.deserialize(io.StringIO(config["polars_json"]), format="json"))

    def __call__(self, instance: Instance) -> Instance:
        return instance  # applied to the catalog by the pipeline, not per instance


@dataclass(frozen=True)
class Map:
    """A user function ``Instance -> Instance | None`` as a stage.

    The function must be importable by name (defined at module level) to run in worker
    processes and to be written into a pipeline file.
    """

    fn: Callable[[Instance], Instance | None]
    name: str = ""

    def __call__(self, instance: Instance) -> Instance | None:
        return self.fn(instance)

    def config(self) -> dict[str, Any]:
        return {"type": "map", "fn": f"{self.fn.__module__}:{self.fn.__qualname__}"}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Map:
        module, _, qualname = config["fn"].partition(":")
        try:
            target: Any = importlib.import_module(module)
            for part in qualname.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"map function {config['fn']!r} cannot be imported: {exc}") from exc
        return cls(target)

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise ConfigError(f"map needs a callable, got {type(self.fn).__name__}")
        if not self.name:
            object.__setattr__(self, "name", f"map({getattr(self.fn, '__name__', 'fn')})")


def filter(expr: Any) -> Filter:  # noqa: A001 - the pipeline vocabulary of USAGE.md
    """A :class:`Filter` stage."""
    return Filter(expr)


def map(fn: Callable[[Instance], Instance | None]) -> Map:  # noqa: A001
    """A :class:`Map` stage."""
    return Map(fn)
