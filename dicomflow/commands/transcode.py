"""``dicomflow transcode SRC DST --to NAME|UID``: every instance of SRC into DST, re-encoded."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``transcode`` subcommand."""
    from ..pipeline.transcode import TARGETS

    parser = subparsers.add_parser(
        "transcode",
        help="store every instance of SRC in another transfer syntax, as Part 10 files in DST",
        description=(
            "Scan SRC, convert each instance to the transfer syntax given by --to, and write it "
            "as a Part 10 file under DST ({PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/"
            "{SOPInstanceUID}.dcm). Lossless targets keep every pixel value; lossy ones need "
            "--lossy and give each instance a new SOP Instance UID. Every input is a row of the "
            "manifest (DST.manifests); instances that fail (pixels that cannot be "
            "decoded, a target that cannot hold them) are listed there with the reason, and a "
            "rerun skips what is done."
        ),
    )
    parser.add_argument("src", metavar="SRC", help="folder, glob or fsspec URL")
    parser.add_argument("dst", metavar="DST", help="output folder")
    parser.add_argument(
        "--to",
        required=True,
        metavar="NAME|UID",
        help=f"target transfer syntax: a UID or one of {', '.join(TARGETS)}",
    )
    parser.add_argument("--lossy", action="store_true", help="allow lossy targets")
    parser.add_argument("--quality", type=int, help="jpeg-baseline quality, 1-100 (default 90)")
    parser.add_argument("--ratio", type=float, help="jpeg2000 compression ratio (default 10)")
    parser.add_argument("--near", type=int, help="jpeg-ls-near-lossless NEAR (default 2)")
    parser.add_argument("--encoder", help="use this codec package instead of the fastest one")
    parser.add_argument("--workers", type=int, help="processes (default: one per core)")
    parser.add_argument(
        "--dry-run", action="store_true", help="show what would be done, write nothing"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..catalog import scan
    from ..errors import ConfigError
    from ..pipeline.pipeline import pipeline
    from ..pipeline.transcode import Transcode
    from ..writers.part10 import Part10Folder

    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    stage = Transcode(
        args.to,
        lossy=args.lossy,
        quality=args.quality,
        ratio=args.ratio,
        near=args.near,
        encoder=args.encoder,
    )
    job = (pipeline(scan(args.src)) | stage).write(Part10Folder(args.dst))
    report = job.execute(workers=args.workers, progress=not args.quiet, dry_run=args.dry_run)
    rows = report.manifest.to_pylist()
    if args.dry_run:
        planned = sum(1 for r in rows if r["status"] == "planned")
        print(f"dry run: {planned:,} of {len(rows):,} inputs would be transcoded", file=sys.stderr)
        return 0
    print(f"transcode to {stage.uid.name}: {report.summary()}", file=sys.stderr)
    failed = [r for r in rows if r["status"] == "failed"]
    for row in failed[:10]:
        reason = (row["reason"] or "").strip().splitlines() or [""]
        print(f"  failed {row['source_uri']}: {reason[0]}", file=sys.stderr)
    if len(failed) > 10:
        print(f"  ... and {len(failed) - 10:,} more (see the manifest)", file=sys.stderr)
    return 0
