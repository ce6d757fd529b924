"""``dicomflow scan``: catalog DICOM files into Parquet."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError


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
    p.add_argument("-o", "--output", required=True, metavar="OUT.parquet")
    p.add_argument(
        "--columns",
        default="default",
        help="'default', 'all', or a comma-separated list of keywords, tags, CREATOR:ggggxxee",
    )
    p.add_argument("--header", choices=["json", "raw"], help="add the whole header as a column")
    p.add_argument("--workers", type=int, help="processes (default: one per core)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--storage-options",
        type=json.loads,
        default={},
        metavar="JSON",
        help="fsspec options for URLs, e.g. '{\"anon\": true}'",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or lines")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..catalog import scan
    from ..runtime import progress_for

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    catalog = scan(
        args.sources,
        columns=args.columns,
        header=args.header,
        storage_options=args.storage_options,
        workers=args.workers,
        batch_size=args.batch_size,
    )
    with progress_for(quiet=args.quiet) as progress:
        stats = catalog.to_parquet(args.output, progress=progress)
    print(
        f"{stats.files:,} files: {stats.instances:,} instances, {stats.errors:,} errors "
        f"(see the error column) in {stats.seconds:.1f} s, {stats.files_per_second:,.0f} files/s"
        f" -> {args.output}",
        file=sys.stderr,
    )
    return 0
