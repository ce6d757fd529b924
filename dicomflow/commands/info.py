"""``dicomflow info PATH``: what a catalog, a lake or a run's manifest holds, in a few tables.

``info CATALOG --geometry``: the geometry report per series (``Volumes.series_report``), what
``dicomflow export`` would find and decide for each series, read from the catalog alone.

PATH is a catalog (a ``.parquet`` file or a partitioned dataset folder that ``scan`` wrote),
a lake (a folder with ``_lake/`` records: ``receive`` and ``pull`` write them), or a manifest
(a ``run-*.parquet`` file, or a ``*.manifests`` folder: its latest run).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
from typing import Any

from ..errors import ConfigError
from ._format import add_format, print_records, print_table, to_json
from .run import EXIT_OK

__all__ = ["register"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "info",
        help="summarise a catalog, a lake or a manifest (counts by modality, errors, outcomes)",
        description=(
            "Summarise what PATH holds. A catalog: patients, studies, series, instances, frames "
            "and bytes by modality, and unreadable files by kind of error. A lake: its records "
            "by how they came (C-STORE, C-GET, C-MOVE, WADO-RS, adopted) and sender. A manifest: "
            "inputs by status, stage and reason."
        ),
    )
    p.add_argument("path", metavar="PATH", help="catalog .parquet or folder, lake, or manifest")
    p.add_argument(
        "--geometry",
        action="store_true",
        help="catalog: the geometry report per series (found and expected slices, gaps, "
        "duplicates, orientations, localizers, tilt, the decision export would take)",
    )
    add_format(p, "table: for people; csv: the main table only; json: every table "
               "(default: table)")  # fmt: skip
    p.set_defaults(func=run)


def _kind(path: str) -> str:
    if os.path.isdir(os.path.join(path, "_lake")):
        return "lake"
    if os.path.isdir(path):
        if glob.glob(os.path.join(path, "run-*.parquet")) or glob.glob(
            os.path.join(path, "run-*", "part-*.parquet")
        ):
            return "manifest"
        import pyarrow.dataset as pads

        try:
            names = set(pads.dataset(path, format="parquet", partitioning="hive").schema.names)
        except Exception as exc:  # noqa: BLE001 - any unreadable folder: one clear message
            raise ConfigError(f"{path!r} is not a catalog folder: {exc}") from None
        if {"uri", "error"} <= names:
            return "catalog"
        raise ConfigError(f"{path!r} holds no catalog, lake or manifest")
    if not os.path.exists(path):
        raise ConfigError(f"{path!r} does not exist")
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
    except Exception as exc:  # noqa: BLE001 - any unreadable file: one clear message
        raise ConfigError(f"{path!r} is not a Parquet file: {exc}") from None
    if {"source_uri", "status"} <= names:
        return "manifest"
    if {"uri", "error"} <= names:
        return "catalog"
    raise ConfigError(f"{path!r} is neither a catalog nor a manifest (columns: {sorted(names)})")


#: the columns of the report per series shown as a table or CSV (JSON has them all)
_GEOMETRY_COLUMNS = (
    "series_instance_uid", "SeriesNumber", "Modality", "SeriesDescription", "decision",
    "actions", "instances", "volumes", "shape", "found_slices", "expected_slices",
    "declared_slices", "missing_slices", "duplicate_instances", "duplicate_positions",
    "orientations", "localizers_dropped", "refused_images", "tilt_degrees",
)  # fmt: skip


def _geometry(table: Any) -> tuple[dict[str, Any], Any]:
    """The report per series of a catalog, and the counts of its decisions."""
    import polars as pl

    from ..pixels import volumes

    report = pl.from_arrow(volumes(table).series_report)
    assert isinstance(report, pl.DataFrame)
    decided = report["decision"].str.split(":").list.first().value_counts(sort=True)
    counts = {str(d): int(n) for d, n in decided.iter_rows()}
    return counts, report


def _catalog(path: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    import pyarrow.dataset as pads

    from ..catalog import errors_by_reason, modality_counts, totals

    if os.path.isdir(path):
        table = pads.dataset(path, format="parquet", partitioning="hive").to_table()
    else:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    return (
        totals(table),
        {
            "by_modality": modality_counts(table),
            "errors": errors_by_reason(table),
        },
        "by_modality",
    )


def _lake(path: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    import polars as pl

    from ..network import read_records

    df = pl.from_arrow(read_records(path))
    assert isinstance(df, pl.DataFrame)
    totals = {
        "instances": df.height,
        "studies": df["study_instance_uid"].n_unique() if df.height else 0,
        "series": df["series_instance_uid"].n_unique() if df.height else 0,
        "bytes": int(df["size"].fill_null(0).sum()) if df.height else 0,
    }
    by_source = (
        df.group_by("source", "calling_ae")
        .agg(
            pl.len().alias("instances"),
            pl.col("series_instance_uid").n_unique().alias("series"),
            pl.col("size").sum().alias("bytes"),
            pl.col("received_at").min().alias("first"),
            pl.col("received_at").max().alias("last"),
        )
        .sort("instances", descending=True)
    )
    return totals, {"by_source": by_source}, "by_source"


def _manifest(path: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    import polars as pl
    import pyarrow.parquet as pq

    from ..pipeline import read_manifests

    if os.path.isdir(path):
        runs = sorted(glob.glob(os.path.join(path, "run-*.parquet")))
        table = pq.read_table(runs[-1]) if runs else read_manifests(path)
    else:
        table = pq.read_table(path)
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    counts = df["status"].value_counts() if df.height else None
    totals = {"inputs": df.height}
    if counts is not None:
        totals.update({str(s): int(n) for s, n in counts.iter_rows()})
    outcomes = (
        df.group_by("status", "stage", "reason")
        .len("inputs")
        .sort("inputs", "status", descending=[True, False])
    )
    return totals, {"outcomes": outcomes}, "outcomes"


def run(args: argparse.Namespace) -> int:
    path = args.path.rstrip("/") or args.path
    kind = _kind(path)
    if args.geometry:
        if kind != "catalog":
            raise ConfigError(f"--geometry reads a catalog; {path!r} is a {kind}")
        return _run_geometry(path, args.format)
    totals, tables, main = {"catalog": _catalog, "lake": _lake, "manifest": _manifest}[kind](path)
    if args.format == "json":
        doc = {"path": path, "kind": kind, "totals": totals}
        doc.update({name: to_json(t) for name, t in tables.items()})
        print(json.dumps(doc, indent=2, default=str))
        return EXIT_OK
    if args.format == "csv":
        print_records(tables[main], "csv")
        return EXIT_OK
    print(f"{kind} {path}: " + ", ".join(f"{v:,} {k}" for k, v in totals.items()))
    for name, table in tables.items():
        if table.height:
            print(f"\n{name.replace('_', ' ')}:")
            print_table(table, rows=40)
    return EXIT_OK


def _run_geometry(path: str, fmt: str) -> int:
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    if os.path.isdir(path):
        table = pads.dataset(path, format="parquet", partitioning="hive").to_table()
    else:
        table = pq.read_table(path)
    counts, report = _geometry(table)
    if fmt == "json":
        doc = {"path": path, "kind": "catalog", "decisions": counts, "series": to_json(report)}
        print(json.dumps(doc, indent=2, default=str))
        return EXIT_OK
    shown = report.select(_GEOMETRY_COLUMNS)
    if fmt == "csv":
        print_records(shown, "csv")
        return EXIT_OK
    print(f"catalog {path}: {report.height:,} series: "
          + ", ".join(f"{n:,} {d}" for d, n in counts.items()))  # fmt: skip
    if report.height:
        print_table(shown, rows=40)
    return EXIT_OK
