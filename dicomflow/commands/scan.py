"""``dicomflow scan``: catalog DICOM files into Parquet."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ..errors import ConfigError
from .run import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, list_failures


def register(sub: Any) -> None:
    p = sub.add_parser(
        "scan",
        help="catalog DICOM files (local, glob or URL) into a Parquet table",
        description=(
            "Scan DICOM files into a Parquet catalog: one row per file, typed columns. "
            "Files that are not readable DICOM are rows with the 'error' column set."
        ),
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="path, glob or fsspec URL")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT.parquet",
        help="the catalog: a .parquet file, or a dataset folder with --partition-by; "
        "with --format delta|iceberg a table folder or URL",
    )
    p.add_argument(
        "--format",
        choices=["parquet", "delta", "iceberg"],
        default="parquet",
        help="parquet (default): one file or a dataset folder; delta: a Delta Lake table; "
        "iceberg: an Iceberg table in a SQL catalog. Delta and Iceberg get one commit per "
        "batch, and a rerun skips the batches a killed run committed",
    )
    p.add_argument(
        "--iceberg-catalog",
        metavar="DB",
        help="--format iceberg: the catalog, a SQLite file or SQLAlchemy URL (default: "
        "OUT/catalog.db; required when OUT is a URL)",
    )
    p.add_argument(
        "--iceberg-table",
        default="dicomflow.catalog",
        metavar="NAMESPACE.NAME",
        help="--format iceberg: the table's name in the catalog (default dicomflow.catalog)",
    )
    p.add_argument(
        "--incremental",
        action="store_true",
        help="read only files OUT lacks or holds with another size or modification time, "
        "and add them to OUT (a rerun after an interruption, or on a grown archive)",
    )
    p.add_argument(
        "--partition-by",
        action="append",
        default=[],
        metavar="COLUMN",
        help="write a hive-partitioned dataset folder by this column (repeatable), appending",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out files whose name or path matches (repeatable), e.g. '*.json'",
    )
    p.add_argument(
        "--columns",
        default="default",
        help="'default', 'all', or a comma-separated list of keywords, tags, CREATOR:ggggxxee",
    )
    p.add_argument("--header", choices=["json", "raw"], help="add the whole header as a column")
    p.add_argument("--workers", type=int, help="processes (default: one per core)")
    p.add_argument("--batch-size", type=int, default=256, help="files per task (default 256)")
    p.add_argument(
        "--storage-options",
        type=json.loads,
        default={},
        metavar="JSON",
        help="fsspec options for URLs, e.g. '{\"anon\": true}'",
    )
    p.add_argument(
        "--max-errors",
        type=int,
        metavar="N",
        help="stop, write nothing and exit 3 as soon as more than N files are unreadable "
        "(default: no limit; the scan exits 1 only when no file was readable)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or lines")
    p.set_defaults(func=run)


class _TooManyErrors(Exception):
    """Raised from the progress callback to stop a scan past ``--max-errors``."""


def run(args: argparse.Namespace) -> int:
    from ..catalog import scan
    from ..runtime import progress_for

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    _check_output(args.output, args.partition_by, args.format)
    catalog = scan(
        args.sources,
        columns=args.columns,
        header=args.header,
        storage_options=args.storage_options,
        workers=args.workers,
        batch_size=args.batch_size,
        exclude=args.exclude,
    )
    if args.max_errors is not None and args.max_errors < 0:
        raise ConfigError(f"--max-errors must be >= 0, got {args.max_errors}")
    with progress_for(quiet=args.quiet) as shown:

        def progress(event: Any) -> None:
            shown(event)
            if args.max_errors is not None and event.failed > args.max_errors:
                raise _TooManyErrors(event.failed)

        try:
            if args.format != "parquet":
                stats = catalog.to_table(
                    args.output, args.format, incremental=args.incremental, progress=progress,
                    storage_options=args.storage_options, partition_by=args.partition_by,
                    catalog=args.iceberg_catalog, table=args.iceberg_table,
                )  # fmt: skip
            elif args.incremental:
                stats = catalog.update(args.output, partition_by=args.partition_by,
                                       progress=progress)  # fmt: skip
            else:
                stats = catalog.to_parquet(args.output, partition_by=args.partition_by,
                                           progress=progress)  # fmt: skip
        except _TooManyErrors as stop:
            print(
                f"stopped: {stop.args[0]:,} unreadable files, more than --max-errors "
                f"{args.max_errors}; nothing written to {args.output}",
                file=sys.stderr,
            )
            return EXIT_STOPPED
    if args.format != "parquet":
        print(_summary(stats, args), file=sys.stderr)
        return _table_exit(args)
    print(
        f"{stats.files:,} files: {stats.instances:,} instances, {stats.errors:,} errors "
        f"(see the error column) in {stats.seconds:.1f} s, {stats.files_per_second:,.0f} files/s"
        f" -> {args.output}",
        file=sys.stderr,
    )
    if args.incremental:
        print(f"incremental: {stats.unchanged:,} files unchanged (not read), "
              f"{stats.replaced:,} changed files read again", file=sys.stderr)  # fmt: skip
    if stats.excluded:
        print(f"{stats.excluded:,} files excluded by --exclude", file=sys.stderr)
    if stats.errors:
        list_failures(_errors(args.output), f"the error column of {args.output}")
    if not stats.instances and not stats.unchanged:
        print(f"no readable DICOM instance in {' '.join(args.sources)}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


_PARQUET = (".parquet", ".pq")
#: suffixes of formats people expect and the scan does not write
_NOT_PARQUET = (".csv", ".tsv", ".json", ".ndjson", ".jsonl", ".xlsx", ".txt", ".arrow", ".feather")


def _summary(stats: Any, args: argparse.Namespace) -> str:
    line = (
        f"{stats.files:,} files: {stats.instances:,} instances, {stats.errors:,} errors "
        f"(see the error column) in {stats.seconds:.1f} s -> {args.format} table {args.output}"
    )
    if args.incremental:
        line += f"; {stats.unchanged:,} files unchanged (not read), {stats.replaced:,} changed"
    return line


def _table_exit(args: argparse.Namespace) -> int:
    """A table holds earlier runs' rows too: the exit says whether it holds a readable one."""
    from ..catalog import read_table

    table = read_table(
        args.output, args.format, storage_options=args.storage_options,
        columns=("uri", "error"), catalog=args.iceberg_catalog, table=args.iceberg_table,
    )  # fmt: skip
    if table.num_rows and table.column("error").null_count:
        return EXIT_OK
    print(f"no readable DICOM instance in {' '.join(args.sources)}", file=sys.stderr)
    return EXIT_FAILED


def _check_output(output: str, partition_by: list[str], fmt: str = "parquet") -> None:
    suffix = os.path.splitext(output.rstrip("/"))[1].lower()
    if fmt != "parquet":
        if suffix in _NOT_PARQUET or suffix in _PARQUET:
            raise ConfigError(
                f"--format {fmt} writes a table folder (or URL): name a folder, not {output!r}"
            )
        return
    if partition_by:
        if suffix in _NOT_PARQUET or suffix in _PARQUET:
            raise ConfigError(
                f"--partition-by writes a dataset folder of Parquet files: name a folder, "
                f"not {output!r}"
            )
    elif suffix not in _PARQUET:
        raise ConfigError(
            f"scan writes Parquet: name the output .parquet (got {output!r}); for another "
            "format read it back, e.g. polars.read_parquet(...).write_csv(...)"
        )


def _errors(path: str) -> list[str]:
    """The error rows of the catalog just written, as "path: reason" lines."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(path, columns=["uri", "error"])
    table = table.filter(pc.is_valid(table.column("error")))
    return [f"{p}: {e}" for p, e in zip(*(table.column(c).to_pylist() for c in ("uri", "error")))]
