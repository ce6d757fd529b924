"""``dicomflow echo|find|pull|receive``: talk to a PACS, fill a lake from it, or listen for one."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Any

from ..errors import ConfigError
from .run import EXIT_FAILED, EXIT_OK, list_failures

__all__ = ["register"]


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after every option's help that has a value as default; nothing for
    options that are off or empty unless given (their help says what that means)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, "", []) or action.required:
            return action.help
        return super()._get_help_string(action)


def _add_peer(parser: argparse.ArgumentParser, *, ae_default: str = "DICOMFLOW") -> None:
    parser.add_argument("--pacs", required=True, metavar="AE@HOST:PORT", help="the peer")
    parser.add_argument("--ae", default=ae_default, help="our AE title (the calling AE)")
    parser.add_argument("--timeout", type=float, default=120.0, help="DIMSE timeout, seconds")


_QUERY_HELP = (
    "keyword=value pairs, e.g. 'Modality=CT StudyDate=2024-01-01..2024-01-31'; dates and times "
    "compact (20240101) or ISO (2024-01-01), ranges A..B or DICOM's 20240101-20240131 "
    "(default: everything)"
)


def register(subparsers: Any) -> None:
    """Add the ``echo``, ``find``, ``pull`` and ``receive`` subcommands."""
    command = {"formatter_class": _HelpWithDefaults}
    p = subparsers.add_parser("echo", help="C-ECHO a DICOM peer", **command)
    _add_peer(p)
    p.set_defaults(func=run_echo)

    p = subparsers.add_parser(
        "find",
        help="C-FIND a DICOM peer; answers as a table (or Parquet)",
        description=(
            "Query a peer at one level; the answers are typed like a dicomflow catalog. A key "
            "of a lower level is asked as its study-level equivalent (Modality as "
            "ModalitiesInStudy) or refused."
        ),
        **command,
    )
    _add_peer(p)
    p.add_argument(
        "--level", default="study", choices=["patient", "study", "series", "image"],
        help="Query/Retrieve level of the answers",
    )  # fmt: skip
    p.add_argument(
        "--model", default="study", choices=["study", "patient"], help="information model root"
    )
    p.add_argument("--query", default="", help=_QUERY_HELP)
    p.add_argument(
        "--columns", default="", help="extra return keys, comma separated (default: none)"
    )
    p.add_argument(
        "-o", "--output", metavar="OUT.parquet", help="write the answers here (default: print)"
    )
    p.set_defaults(func=run_find)

    p = subparsers.add_parser(
        "pull",
        help="pull every matching series from a PACS into a lake (resumable)",
        description=(
            "Plan with C-FIND (study, then series), fetch series by series with C-GET (or "
            "C-MOVE to a Storage SCP started here), check every series is complete. Rerunning "
            "the same command fetches only what is missing. A setting no retry can fix (the "
            "PACS does not know our AE title as a C-MOVE destination, our port is in use) "
            "stops the pull at once, with the fix."
        ),
        **command,
    )
    _add_peer(p)
    p.add_argument("--query", default="", help=_QUERY_HELP)
    p.add_argument("--lake", required=True, metavar="DST", help="lake folder (or fsspec URL)")
    p.add_argument("--port", type=int, default=11113, help="our Storage SCP port (C-MOVE)")
    p.add_argument("--bind", default="0.0.0.0", help="address our Storage SCP listens on")
    p.add_argument("--concurrency", type=int, default=2, help="series fetched at once")
    p.add_argument(
        "--store-ae",
        action="append",
        default=[],
        metavar="AE",
        help="calling AE the PACS stores with on C-MOVE, if not its own (repeatable; "
        "default: its own only)",
    )
    p.add_argument(
        "--method", default="auto", choices=["auto", "get", "move"],
        help="C-GET, C-MOVE to our Storage SCP, or auto: C-GET if the PACS accepts it",
    )  # fmt: skip
    p.add_argument(
        "--model", default="study", choices=["study", "patient"], help="information model root"
    )
    p.add_argument(
        "--retries", type=int, default=3, help="attempts after the first for a failed series"
    )
    p.add_argument(
        "--fsync", default="batch", choices=["each", "batch", "none"],
        help="durability: each file, each series (batch), or left to the system",
    )  # fmt: skip
    _add_stages(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run_pull)

    p = subparsers.add_parser(
        "receive",
        help="run a Storage SCP that lands every received instance in a lake",
        description=(
            "Listen for C-STORE from the allowed calling AE titles; write each instance as "
            "received (no decoding) to DST/<study>/<series>/<sop>.dcm, acknowledge once it is "
            "durable, record it in DST/_lake/received-*.parquet (with the scan's columns: the "
            "lake's catalog). Instances whose UIDs are not valid UIDs are refused. On start, "
            "files without a record (a crash) are recorded. Each association is logged as one "
            "line, running counts every 10 s. Stops on Ctrl-C or SIGTERM."
        ),
        **command,
    )
    p.add_argument("--ae", required=True, help="the AE title we answer to")
    p.add_argument("--port", type=int, required=True, help="the port to listen on")
    p.add_argument("--lake", required=True, metavar="DST", help="lake folder (or fsspec URL)")
    p.add_argument("--bind", default="0.0.0.0", help="address to listen on")
    p.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="AE",
        help="allowed calling AE (repeat; default: none, so give it or --allow-any)",
    )
    p.add_argument("--allow-any", action="store_true", help="accept any calling AE title")
    p.add_argument(
        "--allow-host", action="append", default=None, metavar="IP",
        help="allowed peer address (repeat; default: any address)",
    )  # fmt: skip
    p.add_argument(
        "--fsync", default="each", choices=["each", "batch", "none"],
        help="durability: acknowledged once durable (each), in batches, or left to the system",
    )  # fmt: skip
    p.add_argument("--max-associations", type=int, default=16, help="associations served at once")
    p.add_argument(
        "--max-instance-bytes", type=int, default=None, metavar="N",
        help="largest data set one C-STORE may carry; a sender going past it is aborted "
        "(default: 4 GiB, what DICOM can declare)",
    )  # fmt: skip
    _add_stages(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no running counts")
    p.add_argument(
        "--log-every", type=float, default=10.0, metavar="SECONDS",
        help="running counts (instances/s, MB/s, failures) every this many seconds when "
        "stderr is not a terminal",
    )  # fmt: skip
    p.set_defaults(func=run_receive)


def _add_stages(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="MODULE:CALLABLE",
        help="apply a stage (Instance -> Instance | None) before landing (repeatable; "
        "default: none)",
    )
    p.add_argument(
        "--deid",
        metavar="KEYFILE",
        help="de-identify before landing, keyed by this secret file: the lake is then "
        "shareable, nothing in it names an original (what does goes to DST.private/) "
        "(default: as received)",
    )
    p.add_argument(
        "--crosswalk",
        metavar="FILE",
        help="with --deid, write the original<->pseudonym pairs to this Parquet file, "
        "outside the lake (default: none)",
    )


def _stages(args: argparse.Namespace) -> list[Any]:
    stages: list[Any] = []
    for spec in args.stage:
        module, sep, name = spec.partition(":")
        if not sep:
            raise ConfigError(f"--stage {spec!r}: expected MODULE:CALLABLE")
        try:
            stages.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--stage {spec!r}: {exc}") from exc
    if args.deid:
        stages.append(_deid_stage(args.deid, args.crosswalk, args.lake))
    elif args.crosswalk:
        raise ConfigError("--crosswalk needs --deid: without it nothing is pseudonymised")
    return stages


def _deid_stage(keyfile: str, crosswalk: str | None = None, lake: str | None = None) -> Any:
    """The de-identification of ``--deid`` (PS3.15 Basic Profile, keyed by the file's secret);
    its crosswalk, if asked for, refused inside the lake."""
    import os

    from ..anonymize import Deidentify, check_apart

    if crosswalk is not None:
        if lake is not None:
            check_apart(crosswalk, lake)
        crosswalk = os.path.abspath(crosswalk)
    return Deidentify(secret_file=keyfile, crosswalk=crosswalk)


def _landing(args: argparse.Namespace, fsync: str) -> tuple[Any, list[Any], Any]:
    """Where a pull or a receiver lands: (the lake, its stages, the --deid stage or None).

    With ``--deid`` it is a shareable lake opened here (close it with :func:`_finish`):
    nothing written inside it holds an original's value."""
    stages = _stages(args)
    if not args.deid:
        return args.lake, stages, None
    from ..network import Lake

    deid = stages[-1]
    return Lake(args.lake, fsync=fsync, stages=stages, deidentified=deid.uid), [], deid


def _finish(lake: Any, deid: Any) -> None:
    """Close a lake :func:`_landing` opened, and fold the crosswalk's parts into its file."""
    if deid is None:
        return
    lake.close()
    if deid.crosswalk is not None:
        pairs = deid.merge_crosswalk()
        print(f"crosswalk: {pairs:,} pairs in {deid.crosswalk} (keep it private)", file=sys.stderr)


def _assoc_options(args: argparse.Namespace) -> Any:
    from ..network import AssociationOptions

    return AssociationOptions(calling_ae=args.ae, dimse_timeout=args.timeout)


def run_echo(args: argparse.Namespace) -> int:
    from ..network import echo

    seconds = echo(args.pacs, options=_assoc_options(args))
    print(f"{args.pacs}: C-ECHO ok in {seconds * 1000:.1f} ms")
    return 0


def run_find(args: argparse.Namespace) -> int:
    from ..network import find

    columns = tuple(c.strip() for c in args.columns.split(",") if c.strip())
    table = find(
        args.pacs, args.query, level=args.level, model=args.model, columns=columns,
        options=_assoc_options(args),
    )  # fmt: skip
    if args.output:
        import pyarrow.parquet as pq

        pq.write_table(table, args.output)
        print(f"{table.num_rows} answers -> {args.output}", file=sys.stderr)
        return 0
    import polars as pl

    with pl.Config(tbl_rows=50, tbl_cols=12, fmt_str_lengths=40, tbl_width_chars=160):
        print(pl.from_arrow(table))
    print(f"{table.num_rows} answers", file=sys.stderr)
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from ..network import PullOptions, pull
    from ..runtime import progress_for

    opts = PullOptions(
        ae_title=args.ae, port=args.port, host=args.bind, method=args.method,
        concurrency=args.concurrency, retries=args.retries, fsync=args.fsync, model=args.model,
        store_aes=tuple(args.store_ae),
        association=_assoc_options(args),
    )  # fmt: skip
    shown = progress_for(quiet=args.quiet)  # a bar on a terminal, else a line every 10 s
    lock = threading.Lock()

    def progress(event: Any) -> None:
        if args.quiet:
            return
        shown(event)
        with lock:
            if event.kind == "planned":
                print(f"planned {event.series_total} series in {event.detail}", file=sys.stderr)
            elif event.kind == "series-done":
                mb = event.bytes / 1e6
                print(
                    f"[{event.series_done}/{event.series_total}] study {event.study} series "
                    f"{event.series}: {event.status}"
                    + (f" ({event.detail})" if event.detail else "")
                    + f"; {event.instances:,} instances, {mb:,.1f} MB so far",
                    file=sys.stderr,
                )
            elif event.kind == "study-done":
                print(f"study {event.study}: {event.status}", file=sys.stderr)
            elif event.kind == "series-retry":
                print(f"retrying series {event.series}: {event.detail}", file=sys.stderr)

    lake, stages, deid = _landing(args, args.fsync)
    try:
        with shown:
            report = pull(args.pacs, args.query, lake, opts, stages=stages, progress=progress)
    finally:
        _finish(lake, deid)
    print(report.summary(), file=sys.stderr)
    if report.shared:
        print(f"report (names the originals: keep it private): {report.path}\n"
              f"de-identified report in the lake: {report.shared}", file=sys.stderr)  # fmt: skip
    elif report.path:
        print(f"report: {report.path}", file=sys.stderr)
    if not report.complete:
        lines = [
            f"{r['status']} series {r['series_instance_uid']} (study {r['study_instance_uid']}):"
            f" {r['present_after'] or 0}/{r['expected']} instances"
            + (f"; {r['error']}" if r["error"] else "")
            for r in report.table.to_pylist()
            if r["status"] not in ("complete", "already complete")
        ]
        list_failures(lines, f"the report: {report.path}" if report.path else "the report")
        print("(interrupted or incomplete? run the same command again: only what is missing "
              "is fetched)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return EXIT_OK


def _log_associations() -> logging.Handler:
    """Each association's line (and the listener's warnings) on stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("dicomflow.network.scp")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def run_receive(args: argparse.Namespace) -> int:
    from ..network import SCPOptions, StorageSCP
    from ..network.scp import ReceiveMeter
    from ..runtime import progress_for

    if not args.allow and not args.allow_any:
        raise ConfigError("say who may store: --allow AE (repeatable) or --allow-any")
    limits = {}
    if args.max_instance_bytes is not None:
        limits["max_instance_bytes"] = args.max_instance_bytes
    opts = SCPOptions(
        ae_title=args.ae, host=args.bind, port=args.port,
        calling_aes=("*",) if args.allow_any else tuple(args.allow),
        hosts=tuple(args.allow_host) if args.allow_host else None,
        fsync=args.fsync, max_associations=args.max_associations, **limits,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    handler = _log_associations()
    shown = progress_for(quiet=args.quiet, interval=args.log_every)  # a bar on a terminal
    lake, stages, deid = _landing(args, args.fsync)
    try:
        with StorageSCP(lake, opts, stages=stages) as scp, shown:
            who = "any AE" if args.allow_any else ", ".join(args.allow)
            if scp.lake.stats.adopted:
                print(f"adopted {scp.lake.stats.adopted:,} file(s) without a record (a crash "
                      "before their records were written)", file=sys.stderr)  # fmt: skip
            print(f"{opts.ae_title} listening on {opts.host}:{scp.port} for {who} -> "
                  f"{args.lake}", file=sys.stderr, flush=True)  # fmt: skip
            meter = ReceiveMeter(scp.lake)
            while not stop.wait(1.0):
                shown(meter.event())
            shown(meter.event(finished=True))
            stats = scp.lake.stats
    finally:
        _finish(lake, deid)
        logging.getLogger("dicomflow.network.scp").removeHandler(handler)
    print(f"stopped: {stats.landed:,} instances landed ({stats.bytes / 1e6:,.1f} MB), "
          f"{stats.failed} failed, {stats.dropped} dropped", file=sys.stderr)  # fmt: skip
    return 0
