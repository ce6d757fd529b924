"""``dicomflow deid SRC DST`` and ``dicomflow verify-deid ORIGINAL DEIDENTIFIED``.

``deid`` runs a pipeline ``scan(SRC) | Deidentify(...)`` into a Part 10 folder (or a media set)
at DST. The manifest goes beside DST (``DST.manifests``), not inside it: it names the original
files and SOP Instance UIDs. ``verify-deid`` pairs each output with its original and searches it
for every identifying value; it exits with 1 on any finding.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .recipe import add_recipe_options, recipe_from_args
from .run import add_run_options, execute

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``deid`` and ``verify-deid`` subcommands."""
    from ..anonymize import OPTIONS

    names = ", ".join(spec.name for spec in OPTIONS)
    p = subparsers.add_parser(
        "deid",
        help="de-identify SRC into DST (PS3.15 Annex E Basic Profile and Options)",
        description=(
            "De-identify every instance of SRC by the Basic Application Level Confidentiality "
            "Profile of DICOM PS3.15 Annex E and the chosen Options, keyed by a project secret "
            "(the same input gives the same output in every run), and write the outputs as "
            "Part 10 files (or a media set with a DICOMDIR) under DST. Instances that cannot be "
            "de-identified with certainty are failed with the reason and not written. The "
            "manifest is written beside DST (DST.manifests), since it names the originals."
        ),
    )
    p.add_argument("src", metavar="SRC", help="folder, glob or fsspec URL of the originals")
    p.add_argument("dst", metavar="DST", help="output folder (to be shared)")
    secret = p.add_mutually_exclusive_group(required=True)
    secret.add_argument("--secret-file", metavar="FILE", help="file holding the project secret")
    secret.add_argument("--secret-env", metavar="VAR", help="environment variable holding it")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a PS3.15 Option (repeatable): {names}",
    )
    p.add_argument("--lookup", metavar="FILE", help="CSV/Parquet table overriding values")
    p.add_argument(
        "--crosswalk", metavar="OUT", help="write original<->pseudonym pairs to this Parquet file"
    )
    p.add_argument("--mediaset", action="store_true", help="write a media set with a DICOMDIR")
    p.add_argument("--template", help="path template of the Part 10 folder (default by UIDs)")
    p.add_argument(
        "--date-shift-days",
        nargs=2,
        type=int,
        metavar=("LOW", "HIGH"),
        help="range of the per-patient date shift in days (default -3650 0)",
    )
    p.add_argument("--pixel-rules", metavar="CSV", help="pixel rule table for clean-pixel-data")
    add_recipe_options(p)
    p.add_argument(
        "--burned-in-text", choices=("blank", "quarantine"), default="blank",
        help="with clean-pixel-data: blank the text OCR finds (default) or fail the instance",
    )  # fmt: skip
    add_run_options(p)
    p.set_defaults(func=run_deid)

    v = subparsers.add_parser(
        "verify-deid",
        help="prove no identifying value of ORIGINAL is left in DEIDENTIFIED",
        description=(
            "Pair each de-identified output with its original (by the run's manifest, else by "
            "the keyed UIDs when the secret is given, else by equal UIDs or by order) and "
            "search everything it holds (every attribute, the kept ones included, private "
            "blocks, nested items, File Meta, pixel data) and its path for every identifying "
            "value of the original. Prints a table of leaks, then a summary of values kept "
            "on purpose or by the profile (not failing); exits with 1 on any leak, on an "
            "output that could not be verified, or when there was nothing to verify."
        ),
    )
    v.add_argument("original", metavar="ORIGINAL")
    v.add_argument("deidentified", metavar="DEIDENTIFIED")
    v.add_argument("--manifest", metavar="DIR", help="the run's manifest folder")
    group = v.add_mutually_exclusive_group()
    group.add_argument("--secret-file", metavar="FILE", help="pair by keyed UIDs")
    group.add_argument("--secret-env", metavar="VAR", help="pair by keyed UIDs")
    v.add_argument(
        "--kept",
        action="append",
        default=[],
        metavar="KEYWORD",
        help="an attribute kept on purpose (repeatable; keyword or (gggg,eeee)): its values "
        "are reported as kept, not as leaks",
    )
    v.add_argument("--workers", type=int, help="processes (default: one per core)")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar or lines")
    v.add_argument("--limit", type=int, default=50, help="findings shown (default 50)")
    v.set_defaults(func=run_verify)


def _table(
    rows: Sequence[tuple[str, ...]], header: tuple[str, ...], widths: tuple[int, ...]
) -> str:
    def cut(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 1] + "~"

    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        cells = (cut(c, w).ljust(w) for c, w in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _dry_run(catalog: Any, stage: Any) -> None:
    """Print what each attribute of the first readable instance would get."""
    import warnings

    import pydicom

    from ..anonymize import explain
    from ..pipeline import read_bytes

    for row in catalog.to_arrow().to_pylist():
        if row.get("error"):
            continue
        import io

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(read_bytes(row["uri"])), force=True)
        actions = explain(
            ds, stage.deid_options, recipe=stage.recipe, allow_identifying=stage.allow_identifying
        )
        print(f"sample instance: {row['uri']}")
        print(
            _table(
                [(a.attribute, f"{a.action} {a.meaning}", a.reason) for a in actions],
                ("attribute", "action", "reason"),
                (56, 16, 70),
            )
        )
        return
    print("no readable instance to show", file=sys.stderr)


def _totals(manifest_folder: str) -> tuple[dict[str, int], dict[str, int]]:
    """The total of each action, and of each identifying attribute a recipe kept."""
    import pyarrow.parquet as pq

    totals: dict[str, int] = {}
    retained: dict[str, int] = {}
    runs = sorted(glob.glob(os.path.join(manifest_folder, "run-*.parquet")))
    if not runs:
        return totals, retained
    for counts in pq.read_table(runs[-1], columns=["counts"]).column("counts").to_pylist():
        for key, value in json.loads(counts or "{}").items():
            if key.startswith("deid.retained."):
                retained[key[14:]] = retained.get(key[14:], 0) + int(value)
            elif key.startswith("deid."):
                totals[key[5:]] = totals.get(key[5:], 0) + int(value)
    return totals, retained


def run_deid(args: argparse.Namespace) -> int:
    from ..anonymize import Deidentify, check_apart
    from ..catalog import scan
    from ..errors import ConfigError
    from ..pipeline import pipeline
    from ..writers import MediaSet, Part10Folder

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    dst = args.dst.rstrip("/") or args.dst
    if args.manifest is None:
        args.manifest = f"{dst}.manifests"
    check_apart(args.manifest, dst)
    if args.crosswalk is not None:
        check_apart(args.crosswalk, dst)
    extra: dict[str, Any] = {}
    if args.date_shift_days is not None:
        extra["date_shift_days"] = tuple(args.date_shift_days)
    stage = Deidentify(
        secret_file=args.secret_file,
        secret_env=args.secret_env,
        options=args.option,
        lookup=args.lookup,
        crosswalk=args.crosswalk and os.path.abspath(args.crosswalk),
        pixel_rules=args.pixel_rules,
        recipe=recipe_from_args(args),
        allow_identifying=args.allow_identifying,
        burned_in_text=args.burned_in_text,
        **extra,
    )
    if args.mediaset:
        sink: Any = MediaSet(dst)
    elif args.template:
        sink = Part10Folder(dst, template=args.template)
    else:
        sink = Part10Folder(dst)
    # the catalog needs one column: listing and reading the first bytes of each file is fast
    # enough in this process unless the archive is large (the scan decides)
    catalog = scan(args.src, columns=["SOPInstanceUID"], workers=1 if args.workers == 1 else None)
    if args.dry_run:
        _dry_run(catalog, stage)
    code = execute((pipeline(catalog) | stage).write(sink), args)
    if args.dry_run:
        return code
    totals, retained = _totals(args.manifest)
    if totals:
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(totals.items()))
        print(f"actions (all instances): {shown}", file=sys.stderr)
    if retained:
        shown = ", ".join(f"{k} {v:,}" for k, v in sorted(retained.items()))
        print(f"kept identifying attributes (recipe): {shown}", file=sys.stderr)
    if args.crosswalk is not None:
        pairs = stage.merge_crosswalk()
        print(f"crosswalk: {pairs:,} pairs in {args.crosswalk} (keep it private)", file=sys.stderr)
    return code


def _tail(text: str, width: int) -> str:
    """The end of a long attribute path (where its keyword is), cut at the front."""
    return text if len(text) <= width else "~" + text[len(text) - width + 1 :]


def _kept_summary(kept: Sequence[Any], limit: int) -> None:
    """Kept values, counted by the attribute they came from and where they were found (item
    numbers left out)."""
    import re

    counts: dict[tuple[str, str], list[Any]] = {}
    for f in kept:
        key = (re.sub(r"\[\d+\]", "[*]", f.attribute), re.sub(r"\[\d+\]", "[*]", f.where))
        counts.setdefault(key, []).append(f)
    rows = sorted(counts.items(), key=lambda item: (-len(item[1]), item[0]))
    print(f"kept (listed, not failing): {len(kept):,} values in "
          f"{len({f.output for f in kept}):,} outputs")  # fmt: skip
    shown = [(_tail(attribute, 56), _tail(where, 56), f"{len(found):,}", found[0].value)
             for (attribute, where), found in rows[:limit]]  # fmt: skip
    print(_table(shown, ("attribute", "found in", "values", "e.g."), (56, 56, 8, 12)))
    if len(rows) > limit:
        print(f"... and {len(rows) - limit:,} more")


def run_verify(args: argparse.Namespace) -> int:
    from ..anonymize import read_secret, verify_folders
    from ..errors import ConfigError
    from ..runtime import progress_for

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    secret = None
    if args.secret_file or args.secret_env:
        secret = read_secret(secret_file=args.secret_file, secret_env=args.secret_env)
    with progress_for(quiet=args.quiet) as progress:
        report = verify_folders(
            args.original,
            args.deidentified,
            manifest=args.manifest,
            secret=secret,
            kept=args.kept,
            workers=args.workers,
            progress=progress,
        )
    if report.findings:
        rows = [(_tail(f.output, 40), _tail(f.attribute, 48), f.value, _tail(f.where, 48))
                for f in report.findings]  # fmt: skip
        print("leaks:")
        print(_table(rows[: args.limit], ("output", "attribute", "value", "found in"),
                     (40, 48, 16, 48)))  # fmt: skip
        if len(rows) > args.limit:
            print(f"... and {len(rows) - args.limit:,} more leaks")
    if report.kept:
        _kept_summary(report.kept, args.limit)
    for problem in report.problems[: args.limit]:
        print(f"problem: {problem}")
    if len(report.problems) > args.limit:
        print(f"... and {len(report.problems) - args.limit:,} more problems")
    print(report.summary(), file=sys.stderr)
    return 0 if report.ok else 1
