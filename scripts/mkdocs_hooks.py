"""MkDocs hooks of the documentation site (``mkdocs.yml``: ``hooks:``).

Three kinds of page are not written by hand:

- ``reference/cli.md`` is generated at build time from the parser the ``dicomflow`` command
  itself uses (:func:`dicomflow.cli.build_parser`): every subcommand (nested ones too) with its
  usage, description and every option with its help, default and choices. Nothing is copied, so
  the page cannot drift from the code.
- ``reference/api/*.md`` are generated from the ``__all__`` of each public package: one page
  per package, each name documented once, where it is defined (mkdocstrings renders the
  docstrings), and a table of every name of ``import dicomflow as dfl`` linking to it.
- ``notebooks/*.ipynb`` are the committed notebooks of ``notebooks/`` (with their outputs),
  added to the site as they are; mkdocs-jupyter renders them without executing them.
"""

from __future__ import annotations

import argparse
import html
import importlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CLI_PAGE = "reference/cli.md"
USAGE_WIDTH = 88  # fixed, so the page does not depend on the terminal that builds it

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}])")
#: what ArgumentDefaultsHelpFormatter (and some helps) append: "... (default: each)"
_SAID_DEFAULT = re.compile(r"\s*\(default: [^()]*\)\s*$")


def _text(value: object) -> str:
    """Plain text as Markdown inline text (one line): nothing in it is taken as markup."""
    text = html.escape(" ".join(str(value).split()), quote=False).replace("|", "&#124;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _code(value: object) -> str:
    """Inline code that may hold backticks or pipes (for table cells)."""
    text = html.escape(str(value), quote=False).replace("|", "&#124;")
    return f"<code>{text}</code>"


def _subcommands(parser: argparse.ArgumentParser):
    """(name, help, subparser) of each subcommand of ``parser``, in the order the help lists."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name), sub


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _option_name(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    if not action.option_strings:
        return formatter._metavar_formatter(action, action.dest)(1)[0]
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = formatter._format_args(action, formatter._get_default_metavar_for_optional(action))
    return ", ".join(f"{option} {metavar}" for option in action.option_strings)


def _default(action: argparse.Action) -> str:
    default = action.default
    if action.required or default is None or default is argparse.SUPPRESS:
        return ""
    if action.nargs == 0 or default in ([], "", ()):  # flags, and repeatable options
        return ""
    return _code(default)


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    formatter = parser.formatter_class(prog=parser.prog, width=USAGE_WIDTH)
    text = formatter._expand_help(action) if action.help else ""
    if _default(action):  # the default has its own column: not said twice
        text = _SAID_DEFAULT.sub("", text)
    parts = [_text(text)] if text else []
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        parts.append("one of " + ", ".join(_code(c) for c in action.choices))
    if action.required and action.option_strings:
        parts.append("**required**")
    return "; ".join(parts)


def _command_section(name: str, summary: str | None, parser: argparse.ArgumentParser,
                     depth: int) -> list[str]:  # fmt: skip
    anchor = parser.prog.removeprefix("dicomflow ").replace(" ", "-")
    lines = [f"{'#' * depth} `{parser.prog}` {{#{anchor}}}", ""]
    if summary:
        lines += [_text(summary[0].upper() + summary[1:]) + ".", ""]
    lines += ["```text", _usage(parser), "```", ""]
    if parser.description:
        lines += [_text(parser.description), ""]
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.help is not argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        ]
        if not actions:
            continue
        title = group.title or "options"
        lines += [f"**{_text(title[0].upper() + title[1:])}**", ""]
        if group.description:
            lines += [_text(group.description), ""]
        lines += ["| argument | meaning | default |", "| --- | --- | --- |"]
        for action in actions:
            row = (_code(_option_name(action, parser)), _help(action, parser), _default(action))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    for sub_name, sub_help, sub in _subcommands(parser):
        lines += _command_section(sub_name, sub_help, sub, depth + 1)
    return lines


def cli_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """The CLI reference page, from ``dicomflow.cli.build_parser()`` (or ``parser``)."""
    if parser is None:
        from dicomflow.cli import build_parser

        parser = build_parser()
    commands = list(_subcommands(parser))
    lines = [
        "# Command line reference",
        "",
        "<!-- generated at build time from dicomflow.cli.build_parser() "
        "by scripts/mkdocs_hooks.py: do not edit -->",
        "",
        _text(parser.description or ""),
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        "Every command exits 0 (all done), 1 (some input failed), 2 (usage or configuration "
        "error: nothing was processed) or 3 (stopped early: run it again to resume).",
        "",
        "| command | what it does |",
        "| --- | --- |",
    ]
    for name, summary, sub in commands:
        anchor = sub.prog.removeprefix("dicomflow ").replace(" ", "-")
        lines.append(f"| [`{name}`](#{anchor}) | {_text(summary or '')} |")
    lines.append("")
    for name, summary, sub in commands:
        lines += _command_section(name, summary, sub, 2)
    return "\n".join(lines) + "\n"


# -- API reference ---------------------------------------------------------------------------
#: The documented packages, from the bottom layer up: a name exported by several of them is
#: documented in the one that defines it, else in the lowest one that exports it.
API_PACKAGES = (
    "errors",
    "dicom",
    "runtime",
    "codecs",
    "catalog",
    "pipeline",
    "pixels",
    "anonymize",
    "writers",
    "derived",
    "network",
    "sample",
)


def _defining_module(package, name: str) -> str | None:
    """Where a lazily exported name (resolved by the package's ``__getattr__``) is defined."""
    obj = getattr(package, name)
    module = getattr(obj, "__module__", None) if callable(obj) else None
    if module and module.startswith("dicomflow."):
        return module
    for module_name, module_obj in sorted(sys.modules.items()):
        if module_name.startswith(package.__name__ + ".") and vars(module_obj).get(name) is obj:
            return module_name
    return None


def _rendered_elsewhere(package, name: str) -> bool:
    """Whether griffe, reading the source, cannot see ``package.name`` as the object it is:
    a name resolved lazily (module ``__getattr__``), or a function that shadows a submodule of
    the same name (``dicomflow.network.pull``). Those are documented where they are defined."""
    if name not in vars(package):
        return True
    obj = getattr(package, name)
    if isinstance(obj, ModuleType) or not hasattr(package, "__path__"):
        return False
    return importlib.util.find_spec(f"{package.__name__}.{name}") is not None


def _key(obj: object, name: str) -> int | str:
    """What identifies a public object across packages: classes, functions and modules by
    identity (one object exported under several packages), constants by name (equal ints
    and strings may be one object in CPython without being the same name)."""
    return id(obj) if callable(obj) or isinstance(obj, ModuleType) else name


def api_homes() -> dict[int | str, str]:
    """Where each public object is documented (its identifier), by :func:`_key`."""
    packages = {p: importlib.import_module(f"dicomflow.{p}") for p in API_PACKAGES}
    homes: dict[int | str, str] = {}
    # first the packages that define an object, then the lowest that exports it
    for by_definition in (True, False):
        for package in packages.values():
            for name in package.__all__:
                obj = getattr(package, name)
                if _key(obj, name) in homes:
                    continue
                module = getattr(obj, "__module__", None) if callable(obj) else None
                if by_definition and not (module or "").startswith(package.__name__):
                    continue
                lazy = _rendered_elsewhere(package, name)
                where = _defining_module(package, name) if lazy else package.__name__
                homes[_key(obj, name)] = f"{where}.{name}"
    return homes


def _directive(identifier: str, **options: object) -> list[str]:
    lines = [f"::: {identifier}"]
    if options:
        lines.append("    options:")
        for key, value in options.items():
            if isinstance(value, list):
                lines.append(f"      {key}:")
                lines += [f"        - {item}" for item in value]
            else:
                lines.append(
                    f"      {key}: {str(value).lower() if isinstance(value, bool) else value}"
                )
        lines.append("")
    return lines + [""]


def api_package_page(short: str, homes: dict[int | str, str]) -> str:
    package = importlib.import_module(f"dicomflow.{short}")
    name = package.__name__
    here, lazy, elsewhere = [], [], []
    for member in package.__all__:
        home = homes[_key(getattr(package, member), member)]
        if home == f"{name}.{member}":
            here.append(member)
        elif home.startswith(name + ".") and _rendered_elsewhere(package, member):
            lazy.append(home)
        else:
            elsewhere.append((member, home))
    lines = [f"<!-- generated from {name}.__all__ by scripts/mkdocs_hooks.py -->", ""]
    lines += _directive(name, members=here, show_root_heading=True, heading_level=1)
    for identifier in lazy:  # loaded on first use: the page shows them where they are defined
        lines += _directive(identifier, show_root_heading=True, show_root_full_path=False)
    if elsewhere:
        lines += [
            "## Also exported here",
            "",
            "Names of this package documented where they are defined:",
            "",
        ]
        lines += [f"- [`{name}.{member}`][{home}]" for member, home in elsewhere]
        lines.append("")
    return "\n".join(lines)


_ROLE = re.compile(r":(?:py:)?[a-z]+:`~?([^`]+)`")
_INLINE_CODE = re.compile(r"``(.+?)``|`([^`]+)`")


def _summary(obj: object) -> str:
    """The first paragraph of a docstring as one table cell (reST inline code kept as code)."""
    doc = (getattr(obj, "__doc__", None) or "").strip() if callable(obj) else ""
    text = " ".join(doc.split("\n\n")[0].split()) if doc else ""
    text = _ROLE.sub(lambda m: f"``{m[1]}``", text)

    def words(part: str) -> str:  # _text strips the spaces that separate it from the code
        lead, trail = part[:1].isspace(), part[-1:].isspace()
        return (" " if lead else "") + _text(part) + (" " if trail and part.strip() else "")

    out, end = [], 0
    for match in _INLINE_CODE.finditer(text):
        out += [words(text[end : match.start()]), _code(match[1] or match[2])]
        end = match.end()
    return "".join([*out, words(text[end:])])


def api_index_page(homes: dict[int | str, str]) -> str:
    import dicomflow

    lines = [
        "# `import dicomflow as dfl`",
        "",
        "<!-- generated from dicomflow.__all__ by scripts/mkdocs_hooks.py -->",
        "",
        "Everything a user needs is a name of the top-level package; the pages of this section",
        "document each package's public names (its `__all__`), each name where it is defined.",
        "",
        "| name | documented at | summary |",
        "| --- | --- | --- |",
    ]
    here = []
    for member in dicomflow.__all__:
        obj = getattr(dicomflow, member)
        if member == "__version__":
            lines.append(f"| `__version__` | | the version, {_code(obj)} |")
            continue
        if isinstance(obj, type(dicomflow)):
            short = obj.__name__.removeprefix("dicomflow.")
            lines.append(f"| `dfl.{member}` | [`{obj.__name__}`]({short}.md) | the package |")
            continue
        home = homes.get(_key(obj, member))
        if home is None:  # defined in a layer with no page of its own: documented below
            home = f"{_defining_module(dicomflow, member) or 'dicomflow'}.{member}"
            here.append(home)
        lines.append(f"| `dfl.{member}` | [`{home}`][{home}] | {_summary(obj)} |")
    lines.append("")
    lines += _directive("dicomflow", members=False, show_root_heading=False)
    for identifier in here:
        lines += _directive(identifier, show_root_heading=True, heading_level=2)
    return "\n".join(lines)


def api_pages() -> dict[str, str]:
    homes = api_homes()
    pages = {"reference/api/index.md": api_index_page(homes)}
    for short in API_PACKAGES:
        pages[f"reference/api/{short}.md"] = api_package_page(short, homes)
    return pages


@event_priority(100)  # before mkdocs-jupyter's on_files, so the notebooks are seen as pages
def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, CLI_PAGE, content=cli_markdown()))
    for path, content in api_pages().items():
        files.append(File.generated(config, path, content=content))
    # A plain File whose source folder is the repository (not a generated one): mkdocs-jupyter
    # finds the notebook through src_dir, and the page links to the file next to it.
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        files.append(
            File(
                f"{NOTEBOOKS.name}/{notebook.name}",
                src_dir=str(ROOT),
                dest_dir=config["site_dir"],
                use_directory_urls=config["use_directory_urls"],
            )
        )
    return files


_MATHJAX = re.compile(r"<!-- Load mathjax -->.*?<!-- End of mathjax configuration -->", re.S)


def on_page_content(html_text: str, page, config, files) -> str:
    """Drop nbconvert's MathJax loader (a CDN script; no notebook here has any math), so a
    page loads nothing from outside the site."""
    return _MATHJAX.sub("", html_text)
