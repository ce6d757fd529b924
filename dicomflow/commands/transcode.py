"""``dicomflow transcode SRC DST --to NAME|UID``: every instance of SRC into DST, re-encoded."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .run import add_run_options

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``transcode`` subcommand."""
    from ..pipeline import TARGETS

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
    add_run_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..catalog import scan
    from ..pipeline import Transcode, pipeline
    from ..writers import Part10Folder
    from .run import execute

    stage = Transcode(
        args.to,
        lossy=args.lossy,
        quality=args.quality,
        ratio=args.ratio,
        near=args.near,
        encoder=args.encoder,
    )
    print(f"transcode to {stage.uid.name}", file=sys.stderr)
    return execute((pipeline(scan(args.src)) | stage).write(Part10Folder(args.dst)), args)
