"""``dicomflow run``: execute a pipeline described in a TOML (or JSON) file."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

#: Exit codes of every command (documented in the README, section "Exit codes").
EXIT_OK = 0  # every input done (or skipped with a reason)
EXIT_FAILED = 1  # the command ran, but at least one input failed (or a check found something)
EXIT_USAGE = 2  # bad arguments or configuration: nothing was processed
EXIT_STOPPED = 3  # the run stopped early (a full disk, --max-errors): rerun to resume
#: Failures listed in a command's summary before "and N more".
SHOWN = 5


def register(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="run a pipeline file (TOML or JSON: source, stages, sinks)",
        description=(
            "Run a pipeline described in a file. Every input ends as one row of the manifest "
            "(done, skipped or failed, with the reason); rerunning resumes."
        ),
    )
    p.add_argument("pipeline_file", metavar="PIPELINE_FILE")
    add_run_options(p)
    p.set_defaults(func=run)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options every command that runs a pipeline shares."""
    p.add_argument("--workers", type=int, help="processes (default: one per core)")
    p.add_argument("--batch-size", type=int, default=32, help="instances per task")
    p.add_argument("--manifest", metavar="DIR", help="manifest folder (default: OUT.manifests)")
    p.add_argument("--no-resume", action="store_true", help="redo inputs done by earlier runs")
    p.add_argument("--dry-run", action="store_true", help="show what would be done, do nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or lines")


def execute(pipeline: Any, args: argparse.Namespace) -> int:
    """Run ``pipeline`` with the shared options; print the summary; the exit code.

    :data:`EXIT_FAILED` when any input failed, :data:`EXIT_STOPPED` when the run stopped early,
    else :data:`EXIT_OK` (a dry run reports what would fail but exits 0).

    Progress: a bar on a terminal, a line every 10 seconds otherwise (cron, containers;
    ``$DICOMFLOW_PROGRESS_EVERY`` sets the seconds).
    """
    from ..runtime import progress_for

    with progress_for(quiet=args.quiet) as progress:
        report = pipeline.execute(
            workers=args.workers,
            batch_size=args.batch_size,
            manifest=args.manifest,
            resume=not args.no_resume,
            dry_run=args.dry_run,
            progress=progress,
        )
    if args.dry_run:
        import polars as pl

        with pl.Config(tbl_rows=20, fmt_str_lengths=70, tbl_width_chars=140):
            print(
                report.to_polars()
                .group_by("status", "stage", "reason")
                .len()
                .sort("status", "len", descending=[False, True])
            )
    print(report.summary(), file=sys.stderr)
    if report.manifest_path:
        print(f"manifest: {report.manifest_path}", file=sys.stderr)
    failures = [
        f"failed {r['source_uri']}: [{r['stage']}] {r['reason']}"
        for r in report.manifest.to_pylist()
        if r["status"] == "failed"
    ]
    list_failures(failures, f"the manifest: {report.manifest_path or 'not written (dry run)'}")
    if report.stopped:
        return EXIT_STOPPED
    return EXIT_FAILED if failures and not args.dry_run else EXIT_OK


def list_failures(lines: Sequence[str], where: str, shown: int = SHOWN) -> None:
    """Print the first ``shown`` failure lines, then "and N more, see WHERE" (to stderr)."""
    for line in lines[:shown]:
        print(f"  {line}", file=sys.stderr)
    if len(lines) > shown:
        print(f"  ... and {len(lines) - shown:,} more, see {where}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline

    return execute(Pipeline.from_file(args.pipeline_file), args)
