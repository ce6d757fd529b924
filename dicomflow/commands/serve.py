"""``dicomflow serve SOURCE``: a read-only DICOMweb server over a catalog or a lake."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from ..errors import ConfigError
from .run import EXIT_OK

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a catalog or a lake over DICOMweb (QIDO-RS, WADO-RS), read-only",
        description=(
            "Serve SOURCE (a lake, a folder holding a catalog, or a catalog .parquet file) as a "
            "read-only DICOMweb service. Searches (QIDO-RS) are answered from the catalog in "
            "memory; instances, metadata and frames (WADO-RS) are read from the cataloged "
            "files, frames by byte range and as stored. A browse page is at / (facets, studies "
            "and series with thumbnails, a slice scroller, the progress of a running pull or "
            "pipeline). Needs the 'serve' extra (pip install 'dicomflow[serve]')."
        ),
    )
    p.add_argument("source", metavar="SOURCE", help="lake folder, catalog folder or .parquet")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8042, help="TCP port (default: 8042)")
    p.add_argument(
        "--token-env",
        metavar="VAR",
        help="require 'Authorization: Bearer <token>', the token read from this variable",
    )
    p.add_argument(
        "--progress",
        metavar="PATH",
        action="append",
        default=[],
        help="a progress file, or the folder of one (a lake, a run's manifest folder), shown "
        "on the browse page; repeatable (default: the lake's own when SOURCE is a lake)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            raise ConfigError(f"--token-env {args.token_env}: the variable is not set or empty")
    try:
        import uvicorn

        from ..network.serve import create_app, load_index, progress_paths
    except ImportError as exc:
        raise ConfigError(
            f"dicomflow serve needs starlette and uvicorn ({exc.name} is missing): "
            "pip install 'dicomflow[serve]'"
        ) from None
    index = load_index(args.source)
    progress = progress_paths(args.source, args.progress)
    print(
        f"serving {index.studies.height:,} studies, {index.series.height:,} series, "
        f"{index.instances.height:,} instances at http://{args.host}:{args.port}/ (DICOMweb, "
        "and a browse page at that address"
        + ("; bearer token required: open it with ?token=..." if token else "")
        + ")",
        file=sys.stderr,
    )
    app = create_app(index, token=token, progress=progress)
    uvicorn.run(app, host=args.host, port=args.port,
                log_level="warning")  # fmt: skip
    return EXIT_OK
