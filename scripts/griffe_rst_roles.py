"""A griffe extension for the API reference: dicomflow's docstrings use reST roles.

The docstrings are numpydoc with Sphinx cross-reference roles (``:class:`Volume```,
``:func:`~dicomflow.pixels.montage```, ``:mod:`dicomflow.errors```) and ``::`` before literal
blocks. Markdown has neither, so before mkdocstrings renders a docstring this extension turns

- each role into an *optional* cross-reference (``<autoref optional>``): the name is resolved
  in the scope of the object the docstring belongs to (then of its parents), and links to the
  object's entry when the reference documents it; when it documents nothing (a private
  module, another library) it stays inline code, without a warning. ``~`` shows the last
  component only, as in Sphinx;
- a paragraph ending in ``::`` into one ending in ``:`` (the indented block after it already is
  a code block in Markdown).

The docstrings themselves stay as they are, readable in ``help()`` and in an editor.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
LITERAL_MARKER = re.compile(r"(\S)::[ \t]*$", re.M)
LONE_LITERAL_MARKER = re.compile(r"^[ \t]*::[ \t]*$", re.M)


def _canonical(path: str) -> str:
    """Where a ``dicomflow.`` path is defined, found by importing it: the top-level package
    and :mod:`dicomflow.pipeline` export some names lazily (``__getattr__``), which griffe
    cannot see; the API pages document each object where it is defined."""
    import importlib

    parts = path.split(".")
    try:
        obj: Any = importlib.import_module(parts[0])
        found, rest = path, []
        for i, part in enumerate(parts[1:], start=1):
            obj = getattr(obj, part)
            module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
            if isinstance(obj, type(importlib)):
                found, rest = obj.__name__, parts[i + 1 :]
            elif isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
                found, rest = f"{module}.{qualname}", parts[i + 1 :]
    except (ImportError, AttributeError):
        return path
    return ".".join([found, *rest])


def _resolve(obj: griffe.Object, name: str) -> str:
    """The full path a name in ``obj``'s docstring refers to (``name`` itself if unknown)."""
    if name.startswith("dicomflow"):
        return _canonical(name)
    if name.startswith("."):  # relative to the module
        module = obj if obj.is_module else obj.module
        return module.path + name
    head, _, rest = name.partition(".")
    scope: Any = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, ValueError, AttributeError):
            scope = scope.parent
            continue
        path = f"{path}.{rest}" if rest else path
        return _canonical(path) if path.startswith("dicomflow.") else path
    return name


def _convert(text: str, obj: griffe.Object) -> str:
    def role(match: re.Match[str]) -> str:
        short, target = match[1] == "~", match[2].strip()
        name = target.removesuffix("()")
        identifier = _resolve(obj, name)
        title = target.rsplit(".", 1)[-1] if short else target
        return (
            f'<autoref identifier="{html.escape(identifier)}" optional>'
            f"<code>{html.escape(title)}</code></autoref>"
        )

    text = ROLE.sub(role, text)
    text = LONE_LITERAL_MARKER.sub("", text)
    return LITERAL_MARKER.sub(r"\1:", text)


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


class RstRoles(griffe.Extension):
    """Rewrite reST roles and literal markers of every docstring of a loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = _convert(obj.docstring.value, obj)
