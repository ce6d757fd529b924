"""``dicomflow echo|find|pull|receive``: talk to a PACS, fill a lake from it, or listen for one."""

from __future__ import annotations

import argparse
import contextlib
import hmac
import importlib
import logging
import os
import signal
import sys
import threading
from typing import Any

from ..dicom import is_url
from ..errors import ConfigError
from ._format import add_format, print_records
from .run import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, list_failures

__all__ = ["register"]


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after every option's help that has a value as default; for options
    that are empty unless given, ``(default: none)`` unless their help says what that means."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is False:
            return action.help
        if action.default in (None, "", []):
            text = action.help or ""
            return text if "default" in text else f"{text} (default: none)"
        return super()._get_help_string(action)


def _add_peer(parser: argparse.ArgumentParser, *, ae_default: str = "DICOMFLOW") -> None:
    parser.add_argument(
        "--pacs", required=True, metavar="AE@HOST:PORT|URL",
        help="the peer: AE@HOST:PORT (DIMSE), or a DICOMweb service's http(s)://host/dicom-web "
        "(find and pull)",
    )  # fmt: skip
    parser.add_argument("--ae", default=ae_default, help="our AE title (the calling AE)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="DIMSE (DICOMweb: HTTP) timeout, seconds"
    )
    _add_security(parser)


def _add_security(parser: argparse.ArgumentParser) -> None:
    """DICOM TLS and user identity as a service user (echo, find, pull)."""
    tls = parser.add_argument_group("DICOM TLS (the registered port is 2762)")
    tls.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS, verifying the peer with the system's CAs",
    )
    tls.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="CA bundle that verifies the peer's certificate (implies --tls)",
    )
    tls.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="our client certificate, for peers that ask for one (implies --tls)",
    )
    tls.add_argument("--tls-key", metavar="PEM", help="its private key (unencrypted PEM)")
    tls.add_argument(
        "--tls-server-name",
        metavar="NAME",
        help="the name the peer's certificate must carry, if not the host's",
    )
    who = parser.add_argument_group(
        "user identity (PS3.7 D.3.3.7; for a DICOMweb --pacs: HTTP basic authentication)"
    )
    who.add_argument(
        "--username", "--user", dest="username", metavar="NAME",
        help="send this user name when associating (DICOMweb: basic authentication as NAME)",
    )  # fmt: skip
    who.add_argument(
        "--password-env", metavar="VAR", help="send the password held by environment variable VAR"
    )
    who.add_argument(
        "--password-file", metavar="FILE", help="send the password on the first line of FILE"
    )
    who.add_argument("--identity-response", action="store_true",
                     help="ask the peer to confirm the identity; abort if it does not")  # fmt: skip


_QUERY_HELP = (
    "keyword=value pairs, e.g. 'Modality=CT StudyDate=2024-01-01..2024-01-31'; dates and times "
    "compact (20240101) or ISO (2024-01-01), ranges A..B or DICOM's 20240101-20240131 "
    "(default: everything)"
)


def _add_web_auth(parser: argparse.ArgumentParser) -> None:
    """DICOMweb credentials, named by environment variable: never a secret in the command."""
    web = parser.add_argument_group("DICOMweb authentication (secrets only from the environment)")
    web.add_argument(
        "--token-env", metavar="VAR",
        help="send 'Authorization: Bearer' with the token held by environment variable VAR "
        "(default: no token)",
    )  # fmt: skip
    # basic authentication reuses --username/--user and --password-env (user identity)


def _env_secret(var: str, option: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise ConfigError(f"{option} {var}: the environment variable {var} is not set or empty")
    return value


def _remote(args: argparse.Namespace) -> Any:
    """``--pacs`` as a DicomWeb (with its credentials) for a URL, else the text for DIMSE."""
    pacs = args.pacs.strip()
    web_options = ["--token-env"] if args.token_env else []
    from ..network import DicomWeb, Peer

    if not pacs.startswith(("http://", "https://")):
        if web_options:
            raise ConfigError(
                f"{', '.join(web_options)}: DICOMweb authentication, but --pacs {pacs} is a "
                "DIMSE peer (a DICOMweb --pacs starts with http:// or https://)"
            )
        try:
            return Peer.parse(pacs)
        except ConfigError as exc:
            raise ConfigError(f"{exc}; or a DICOMweb URL, e.g. https://pacs/dicom-web") from None

    if args.model != "study":
        raise ConfigError("--model is a DIMSE information model; DICOMweb has none to choose")
    if bool(args.username) != bool(args.password_env):
        raise ConfigError("HTTP basic authentication needs both --user NAME and --password-env VAR")
    if args.tls or args.tls_ca or args.tls_cert or args.identity_response or args.password_file:
        raise ConfigError(
            "--tls*, --password-file and --identity-response are for a DIMSE --pacs; an https:// "
            "DICOMweb URL verifies its server with the system's CAs"
        )
    token = _env_secret(args.token_env, "--token-env") if args.token_env else None
    auth = None
    if args.username:
        auth = (args.username, _env_secret(args.password_env, "--password-env"))
    return DicomWeb(pacs, token=token, auth=auth, timeout=args.timeout)


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
    add_format(p, "how the answers are printed: table (for people, UIDs whole on one line), "
               "csv or json (a list of records), on stdout; the count goes to stderr "
               "(default: table)")  # fmt: skip
    _add_web_auth(p)
    p.set_defaults(func=run_find)

    p = subparsers.add_parser(
        "pull",
        help="pull every matching series from a PACS into a lake (resumable)",
        description=(
            "Plan with C-FIND (study, then series), fetch series by series with C-GET (or "
            "C-MOVE to a Storage SCP started here), check every series is complete. Rerunning "
            "the same command fetches only what is missing. A setting no retry can fix (the "
            "PACS does not know our AE title as a C-MOVE destination, our port is in use) "
            "stops the pull at once, with the fix. A cohort is a CSV with one query a row: "
            "all rows are planned first, and what each row matched is written beside the "
            "report. A DICOMweb PACS is planned with QIDO-RS and retrieved with WADO-RS. Exit "
            "codes: 0 complete, 1 incomplete (rerun) or a cohort row matched nothing, 2 a "
            "setting to fix, 3 stopped outside the window (run it again inside it)."
        ),
        **command,
    )
    _add_peer(p)
    p.add_argument("--query", default="", help=_QUERY_HELP)
    p.add_argument(
        "--cohort", metavar="FILE.csv",
        help="one query per row: a CSV (or TSV, Parquet) whose columns are DICOM keywords, e.g. "
        "AccessionNumber, PatientID, StudyInstanceUID, StudyDate (a date or a range); empty "
        "cells are left out (default: no cohort, one query); the keys of --query join every "
        "row",
    )  # fmt: skip
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
    p.add_argument("--tls-receive", action="store_true",
                   help="our C-MOVE Storage SCP takes TLS too, with the TLS certificate and key "
                   "given below as its own, and their CA bundle verifying the PACS")  # fmt: skip
    polite = p.add_argument_group("when and how fast (what the PACS administrator asks for)")
    polite.add_argument(
        "--window", metavar="HH:MM-HH:MM",
        help="start the pull and its retrieves only in these hours, local time, e.g. "
        "20:00-06:00 (several comma separated); a retrieve started inside runs to its end; "
        "outside, wait for the window (default: any time)",
    )  # fmt: skip
    polite.add_argument(
        "--stop-outside-window", action="store_true",
        help="outside the window, stop cleanly instead of waiting: exit code 3, resume later "
        "by running the same command",
    )  # fmt: skip
    polite.add_argument(
        "--max-studies-per-hour", type=float, metavar="N",
        help="start at most N studies an hour, evenly spaced (default: no limit)",
    )  # fmt: skip
    polite.add_argument(
        "--max-instances-per-second", type=float, metavar="N",
        help="ask for at most N instances a second, on average over retrieves (default: no "
        "limit)",
    )  # fmt: skip
    _add_web_auth(p)
    _add_stages(p)
    _add_table(p)
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
    p.add_argument("--max-associations", type=int, default=16,
                   help="associations served at once (by all the workers together)")  # fmt: skip
    p.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="receiving processes behind the port, each connection served by one; limits hold "
        "for all of them together, memory is per worker (default: the number of cores; 1: one "
        "process)",
    )  # fmt: skip
    p.add_argument(
        "--max-instance-bytes", type=int, default=None, metavar="N",
        help="largest data set one C-STORE may carry; a sender going past it is aborted "
        "(default: 4 GiB, what DICOM can declare)",
    )  # fmt: skip
    tls = p.add_argument_group("DICOM TLS (the registered port is 2762)")
    tls.add_argument("--tls-cert", metavar="PEM", help="accept TLS only, with this certificate")
    tls.add_argument("--tls-key", metavar="PEM", help="its private key (unencrypted PEM)")
    tls.add_argument("--tls-ca", metavar="PEM", help="CA bundle that verifies client certificates")
    tls.add_argument("--tls-require-client-cert", action="store_true",
                     help="refuse clients without a certificate signed by --tls-ca")  # fmt: skip
    p.add_argument("--users", metavar="FILE",
                   help="accept only associations whose user identity matches a 'name:password' "
                   "line of FILE")  # fmt: skip
    _add_stages(p)
    _add_table(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no running counts")
    p.add_argument(
        "--log-every", type=float, default=10.0, metavar="SECONDS",
        help="running counts (instances/s, MB/s, failures) every this many seconds when "
        "stderr is not a terminal",
    )  # fmt: skip
    p.set_defaults(func=run_receive)


def _add_table(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--table-format", choices=["delta", "iceberg", "parquet"],
        help="also keep the lake's records and catalog in a lake table: one commit per "
        "record part (default: the record parts only)",
    )  # fmt: skip
    p.add_argument(
        "--table", metavar="URI",
        help="with --table-format: where the table goes (default DST/_lake/table.FORMAT)",
    )  # fmt: skip
    p.add_argument(
        "--iceberg-catalog", metavar="DB",
        help="an Iceberg table's catalog, a SQLite file or SQLAlchemy URL (default: "
        "catalog.db in the table's folder; required for a URL lake)",
    )  # fmt: skip


def _table(args: argparse.Namespace) -> Any:
    """The lake table of ``--table-format``, or None."""
    fmt = getattr(args, "table_format", None)
    if fmt is None:
        if getattr(args, "table", None) or getattr(args, "iceberg_catalog", None):
            raise ConfigError("--table and --iceberg-catalog need --table-format")
        return None
    from ..catalog import TableWriter
    from ..dicom import join

    uri = args.table or join(args.lake, "_lake", f"table.{fmt}")
    options = getattr(args, "storage_options", None) or {}
    return TableWriter(uri, fmt, storage_options=options, catalog=args.iceberg_catalog,
                       table="dicomflow.lake")  # fmt: skip


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
    table = _table(args)
    if not args.deid and table is None:
        return args.lake, stages, None
    from ..network import Lake

    deid = stages[-1] if args.deid else None
    uid = deid.uid if deid is not None else None
    lake = Lake(args.lake, fsync=fsync, stages=stages, deidentified=uid, table=table)
    return lake, [], deid


def _finish(lake: Any, deid: Any) -> None:
    """Close a lake :func:`_landing` opened, and fold the crosswalk's parts into its file."""
    if isinstance(lake, str):
        return
    lake.close()
    if deid is None:
        return
    if deid.crosswalk is not None:
        pairs = deid.merge_crosswalk()
        print(f"crosswalk: {pairs:,} pairs in {deid.crosswalk} (keep it private)", file=sys.stderr)


def _assoc_options(args: argparse.Namespace) -> Any:
    from ..network import AssociationOptions

    return AssociationOptions(
        calling_ae=args.ae, dimse_timeout=args.timeout, tls=_client_tls(args),
        identity=_identity(args),
    )  # fmt: skip


def _client_tls(args: argparse.Namespace) -> Any:
    from ..network import TLSOptions

    if not (args.tls or args.tls_ca or args.tls_cert):
        if args.tls_key or args.tls_server_name:
            raise ConfigError("--tls-key and --tls-server-name need --tls (or --tls-ca/--tls-cert)")
        return None
    return TLSOptions(certificate=args.tls_cert, private_key=args.tls_key, ca_file=args.tls_ca,
                      server_hostname=args.tls_server_name)  # fmt: skip


def _identity(args: argparse.Namespace) -> Any:
    from ..network import UserIdentity

    if args.username is None:
        if args.password_env or args.password_file or args.identity_response:
            raise ConfigError("--password-env/--password-file/--identity-response need --username")
        return None
    if args.password_env and args.password_file:
        raise ConfigError("give the password once: --password-env or --password-file")
    password = ""
    if args.password_env:
        if args.password_env not in os.environ:
            raise ConfigError(f"--password-env {args.password_env}: the variable is not set")
        password = os.environ[args.password_env]
    elif args.password_file:
        password = _first_line(args.password_file, "--password-file")
    return UserIdentity(args.username, password, positive_response=args.identity_response)


def _first_line(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from exc


class _Users:
    """``authenticate`` for the receive command: user name and password from a file of
    ``name:password`` lines, compared in constant time."""

    def __init__(self, path: str) -> None:
        self.passwords: dict[str, str] = {}
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise ConfigError(f"--users {path}: {exc.strerror or exc}") from exc
        for n, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            name, sep, password = line.partition(":")
            if not sep or not name:
                raise ConfigError(f"--users {path}, line {n}: expected name:password")
            self.passwords[name] = password
        if not self.passwords:
            raise ConfigError(f"--users {path}: no name:password line")

    def __call__(self, identity: Any) -> bool:
        if identity is None or identity.kind not in (1, 2):
            return False
        expected = self.passwords.get(identity.username)
        given = identity.password.encode("utf-8")
        ok = hmac.compare_digest(given, (expected or "").encode("utf-8"))
        return expected is not None and ok


def run_echo(args: argparse.Namespace) -> int:
    from ..network import echo

    seconds = echo(args.pacs, options=_assoc_options(args))
    print(f"{args.pacs}: C-ECHO ok in {seconds * 1000:.1f} ms")
    return 0


def run_find(args: argparse.Namespace) -> int:
    from ..network import DicomWeb, find

    columns = tuple(c.strip() for c in args.columns.split(",") if c.strip())
    remote = _remote(args)
    if isinstance(remote, DicomWeb):
        table = remote.search(args.level, args.query, columns=columns)
    else:
        table = find(
            remote, args.query, level=args.level, model=args.model, columns=columns,
            options=_assoc_options(args),
        )  # fmt: skip
    if args.output:
        import pyarrow.parquet as pq

        pq.write_table(table, args.output)
        print(f"{table.num_rows} answers -> {args.output}", file=sys.stderr)
        return 0
    import polars as pl

    print_records(pl.from_arrow(table), args.format)
    print(f"{table.num_rows} answers", file=sys.stderr)
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from ..network import PullOptions, pull
    from ..runtime import PROGRESS_FILE, ProgressFile, progress_for

    remote = _remote(args)
    if args.stop_outside_window and not args.window:
        raise ConfigError("--stop-outside-window needs a --window")
    opts = PullOptions(
        ae_title=args.ae, port=args.port, host=args.bind, method=args.method,
        concurrency=args.concurrency, retries=args.retries, fsync=args.fsync, model=args.model,
        store_aes=tuple(args.store_ae),
        association=_assoc_options(args), scp_tls=_receive_tls(args),
        window=args.window, outside_window="stop" if args.stop_outside_window else "wait",
        max_studies_per_hour=args.max_studies_per_hour,
        max_instances_per_second=args.max_instances_per_second,
    )  # fmt: skip
    shown = progress_for(quiet=args.quiet)  # a bar on a terminal, else a line every 10 s
    lock = threading.Lock()
    # the pull's state in a local lake, for `dicomflow serve LAKE` to show (counts only)
    tracked = None if is_url(args.lake) else ProgressFile(
        os.path.join(args.lake, "_lake", PROGRESS_FILE)
    )  # fmt: skip

    def progress(event: Any) -> None:
        if tracked is not None:
            tracked(event, "running")  # how it ended is said once the report is in
        if args.quiet:
            return
        if event.kind == "queried":  # planning a cohort: lines, not the pull's bar
            if event.done == event.total or event.done % 100 == 0:
                print(f"queried {event.done:,}/{event.total:,} cohort rows", file=sys.stderr)
            return
        if event.kind != "waiting":
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
            elif event.kind == "waiting" and (event.wait >= 1 or "window" in event.detail):
                print(event.detail, file=sys.stderr)

    lake, stages, deid = _landing(args, args.fsync)
    try:
        with shown, tracked or contextlib.nullcontext():
            report = pull(remote, args.query, lake, opts, cohort=args.cohort, stages=stages,
                          progress=progress)  # fmt: skip
            if tracked is not None:
                tracked.close("stopped" if report.stopped else "finished")
    finally:
        _finish(lake, deid)
    if report.stopped and report.planned is None:  # outside the window before it began
        print(f"nothing retrieved: {report.stopped}", file=sys.stderr)
        return EXIT_STOPPED
    print(report.summary(), file=sys.stderr)
    if report.shared:
        print(f"report (names the originals: keep it private): {report.path}\n"
              f"de-identified report in the lake: {report.shared}", file=sys.stderr)  # fmt: skip
    elif report.path:
        print(f"report: {report.path}", file=sys.stderr)
    for what, path in (("plan", report.plan_path), ("cohort outcome", report.cohort_path)):
        if path:
            print(f"{what}: {path}", file=sys.stderr)
    if report.unmatched:
        n = report.cohort.num_rows if report.cohort is not None else 0
        print(f"{len(report.unmatched)} of {n} cohort rows matched nothing on {args.pacs} "
              "(a finding, not a retry: check these rows):", file=sys.stderr)  # fmt: skip
        lines = [f"row {r['row']}: {r['query']}" for r in report.unmatched]
        list_failures(lines, f"the cohort outcome: {report.cohort_path}")
    if report.stopped:
        left = [r for r in report.table.to_pylist() if r["status"] not in ("complete",
                "already complete")]  # fmt: skip
        print(f"stopped with {len(left)} series left: {report.stopped}", file=sys.stderr)
        return EXIT_STOPPED
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
    return EXIT_FAILED if report.unmatched else EXIT_OK


def _receive_tls(args: argparse.Namespace) -> Any:
    """The TLSOptions of a Storage SCP: pull --tls-receive, receive --tls-cert."""
    from ..network import TLSOptions

    if not getattr(args, "tls_receive", True):
        return None
    # receive: as asked; pull: the PACS must prove who it is when we have its CA
    require = getattr(args, "tls_require_client_cert", bool(args.tls_ca))
    if not args.tls_cert:
        if args.tls_key or args.tls_ca or require or getattr(args, "tls_receive", False):
            raise ConfigError("a TLS Storage SCP needs --tls-cert (and --tls-key)")
        return None
    return TLSOptions(certificate=args.tls_cert, private_key=args.tls_key, ca_file=args.tls_ca,
                      require_client_cert=require)  # fmt: skip


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
        tls=_receive_tls(args), authenticate=_Users(args.users) if args.users else None,
    )  # fmt: skip
    from ..network import ReceivingWorkers

    workers = ReceivingWorkers.default_workers() if args.workers is None else args.workers
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected 1 or more")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    handler = _log_associations()
    shown = progress_for(quiet=args.quiet, interval=args.log_every)  # a bar on a terminal
    if workers > 1:
        try:
            return _receive_with_workers(args, opts, workers, stop, shown)
        finally:
            logging.getLogger("dicomflow.network.scp").removeHandler(handler)
    lake, stages, deid = _landing(args, args.fsync)
    try:
        with StorageSCP(lake, opts, stages=stages) as scp, shown:
            who = "any AE" if args.allow_any else ", ".join(args.allow)
            if scp.lake.stats.adopted:
                print(f"adopted {scp.lake.stats.adopted:,} file(s) without a record (a crash "
                      "before their records were written)", file=sys.stderr)  # fmt: skip
            over = " over TLS" if opts.tls else ""
            print(f"{opts.ae_title} listening on {opts.host}:{scp.port}{over} for {who} -> "
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


def _receive_with_workers(
    args: argparse.Namespace, opts: Any, workers: int, stop: threading.Event, shown: Any
) -> int:
    """``receive --workers N`` (N > 1): the parent accepts, the workers land."""
    from ..network import ReceivingWorkers
    from ..network.scp import ReceiveMeter

    stages = _stages(args)
    deid = stages[-1] if args.deid else None
    pool = ReceivingWorkers(
        args.lake, opts, workers=workers, stages=stages,
        deidentified=deid.uid if deid is not None else None, table=_table(args),
    )  # fmt: skip
    with shown:
        with pool:
            who = "any AE" if args.allow_any else ", ".join(args.allow)
            if pool.stats.adopted:
                print(f"adopted {pool.stats.adopted:,} file(s) without a record (a crash "
                      "before their records were written)", file=sys.stderr)  # fmt: skip
            over = " over TLS" if opts.tls else ""
            print(f"{opts.ae_title} listening on {opts.host}:{pool.port}{over} for {who} -> "
                  f"{args.lake} ({workers} workers)", file=sys.stderr, flush=True)  # fmt: skip
            meter = ReceiveMeter(pool)
            while not stop.wait(1.0) and not pool.failed.is_set():
                shown(meter.event())
        shown(meter.event(finished=True))  # the workers' last counts came as they stopped
    stats = pool.stats
    if deid is not None and deid.crosswalk is not None:
        pairs = deid.merge_crosswalk()
        print(f"crosswalk: {pairs:,} pairs in {deid.crosswalk} (keep it private)", file=sys.stderr)
    print(f"stopped: {stats.landed:,} instances landed ({stats.bytes / 1e6:,.1f} MB), "
          f"{stats.failed} failed, {stats.dropped} dropped", file=sys.stderr)  # fmt: skip
    if pool.failed.is_set():
        print("every receiving worker died (killed?): start the receiver again; what was "
              "acknowledged is in the lake", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return 0
