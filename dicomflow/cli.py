"""The ``dicomflow`` command: one entry point, subcommands discovered in ``dicomflow.commands``."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import commands
from .commands.run import EXIT_USAGE
from .errors import DicomflowError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dicomflow",
        description="DICOM archives to analysis-ready data and back.",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"dicomflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # a helper the commands share, not a command
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except DicomflowError as exc:
        print(f"dicomflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `dicomflow info x | head`: the reader has what it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nor may the exit's flush of stdout complain
        return 141  # 128 + SIGPIPE, as a shell reports a tool the pipe's reader left
    except OSError as exc:  # outside any one input: a missing file, a folder that is a file
        print(f"dicomflow {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
