"""``dicomflow deid-recipe convert|check``, and the recipe options of ``dicomflow deid``.

``convert`` turns a CTP DicomAnonymizer script or a pydicom/deid recipe into a dicomflow recipe
file a site can read and edit; it refuses (exit 1, nothing written) when a rule does not map,
listing every one. ``check`` shows what a recipe file does under the chosen options: each
rule, and the attributes it keeps that the profile does not keep.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["add_recipe_options", "recipe_from_args", "register"]

_CLI = "command line"


def add_recipe_options(p: argparse.ArgumentParser) -> None:
    """The per-attribute rules of ``dicomflow deid``: a recipe file and repeatable flags."""
    g = p.add_argument_group(
        "recipe",
        "Per-attribute rules above the profile: flags win over the recipe file, which wins "
        "over the --option choices, which win over the Basic Profile. TARGET is a keyword "
        '(SeriesDescription), a tag (0008,103E), a mask (0018,xxxx) or (0019,"CREATOR",0C).',
    )
    files = g.add_mutually_exclusive_group()
    files.add_argument("--recipe", metavar="TOML", help="a dicomflow recipe file")
    files.add_argument(
        "--recipe-from-ctp", metavar="SCRIPT", help="a CTP DicomAnonymizer script, converted"
    )
    files.add_argument("--recipe-from-deid", metavar="FILE", help="a deid recipe, converted")
    for action, what in (
        ("keep", "keep the original value"),
        ("remove", "remove the attribute"),
        ("empty", "keep it with an empty value"),
        ("pseudonymise", "replace it by a keyed pseudonym (UIDs, text)"),
        ("shift", "shift its dates by the patient's keyed shift (DA, DT)"),
    ):
        g.add_argument(
            f"--{action}",
            action="append",
            default=[],
            metavar="TARGET",
            help=f"{what} (repeatable)",
        )
    g.add_argument(
        "--replace",
        action="append",
        default=[],
        metavar="TARGET=VALUE",
        help="replace the value (repeatable)",
    )
    g.add_argument(
        "--allow-identifying",
        action="store_true",
        help="let rules keep attributes the profile does not keep (recorded in the outputs' "
        "De-identification Method and in the manifest)",
    )


def _split_replace(text: str) -> tuple[str, str]:
    from ..anonymize import parse_target
    from ..errors import ConfigError

    if text.startswith("("):
        at = text.find(")=")
        while at != -1:
            try:
                parse_target(text[: at + 1])
            except ConfigError:
                at = text.find(")=", at + 1)
                continue
            return text[: at + 1], text[at + 2 :]
        raise ConfigError(f"--replace {text!r}: expected TARGET=VALUE")
    if "=" not in text:
        raise ConfigError(f"--replace {text!r}: expected TARGET=VALUE")
    target, value = text.split("=", 1)
    return target.strip(), value


def recipe_from_args(args: argparse.Namespace) -> Any:
    """The recipe of ``deid``'s options: the file's rules, with the flags' rules above them."""
    from ..anonymize import Recipe, convert_ctp, convert_deid
    from ..errors import ConfigError

    recipe = Recipe()
    if args.recipe:
        recipe = Recipe.load(args.recipe)
    for path, convert in (
        (args.recipe_from_ctp, convert_ctp),
        (args.recipe_from_deid, convert_deid),
    ):
        if path:
            recipe = convert(_read(path), path).require()
    replace: dict[str, str] = {}
    for text in args.replace:
        target, value = _split_replace(text)
        if replace.get(target, value) != value:
            raise ConfigError(
                f"--replace {target} is given two values: {replace[target]!r}, {value!r}"
            )
        replace[target] = value
    flags = Recipe.of(
        keep=args.keep,
        remove=args.remove,
        empty=args.empty,
        replace=replace,
        pseudonymise=args.pseudonymise,
        shift=args.shift,
        origin=_CLI,
    )
    return recipe.then(flags)


def _read(path: str) -> str:
    from ..errors import ConfigError

    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read: {exc}") from None


def register(subparsers: Any) -> None:
    """Add ``deid-recipe`` with its ``convert`` and ``check`` subcommands."""
    p = subparsers.add_parser(
        "deid-recipe",
        help="convert CTP or deid scripts into a dicomflow recipe; check a recipe",
        description=(
            "De-identification recipes: per-attribute rules layered on the PS3.15 profile "
            "(see docs/deidentification.md, Recipes)."
        ),
    )
    sub = p.add_subparsers(dest="recipe_command", metavar="COMMAND", required=True)
    c = sub.add_parser(
        "convert",
        help="convert a CTP DicomAnonymizer script or a deid recipe",
        description=(
            "Convert a CTP DicomAnonymizer script or a pydicom/deid recipe into a dicomflow "
            "recipe file. Every rule that has no recipe form is listed and the conversion is "
            "refused (exit 1, nothing written): rewrite or remove those rules and convert "
            "again. Attributes the script does not name get dicomflow's profile action."
        ),
    )
    c.add_argument("--from", dest="kind", choices=("ctp", "deid"), required=True)
    c.add_argument("file", metavar="FILE")
    c.add_argument("-o", "--output", metavar="TOML", help="write here (default: standard output)")
    c.set_defaults(func=run_convert)
    k = sub.add_parser(
        "check",
        help="show what a recipe file does under the chosen options",
        description=(
            "Read a recipe file, list its rules and the attributes it keeps that the profile "
            "(with the chosen options) does not keep. Exits 2 when dicomflow deid would refuse "
            "it (an invalid rule, or such a keep without --allow-identifying)."
        ),
    )
    k.add_argument("file", metavar="TOML")
    k.add_argument("--option", action="append", default=[], metavar="NAME")
    k.add_argument("--allow-identifying", action="store_true")
    k.set_defaults(func=run_check)


def run_convert(args: argparse.Namespace) -> int:
    from ..anonymize import convert_ctp, convert_deid
    from ..dicom import atomic_write

    convert = convert_ctp if args.kind == "ctp" else convert_deid
    conversion = convert(_read(args.file), args.file)
    for note in conversion.notes:
        print(f"note: {note}", file=sys.stderr)
    if not conversion.ok:
        print(
            f"{len(conversion.unmapped)} rules have no dicomflow recipe form; nothing written:",
            file=sys.stderr,
        )
        for unmapped in conversion.unmapped:
            print(f"  {unmapped}", file=sys.stderr)
        return 1
    text = conversion.to_toml()
    if args.output:
        atomic_write(os.path.abspath(args.output), text.encode("utf-8"))
        print(f"{len(conversion.recipe)} rules written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..anonymize import DeidOptions, Recipe

    recipe = Recipe.load(args.file)
    options = DeidOptions.from_names(args.option)
    identifying = recipe.identifying(options, enforce=not args.allow_identifying)
    for rule in recipe.rules:
        print(rule.describe())
    if recipe.date_shift_days is not None:
        low, high = recipe.date_shift_days
        print(f"date shift: {low} to {high} days")
    for target, why in identifying:
        print(f"keeps identifying: {target} ({why})")
    print(
        f"{len(recipe)} rules, {len(identifying)} keeping identifying attributes", file=sys.stderr
    )
    return 0
