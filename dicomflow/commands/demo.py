"""``dicomflow demo``: the main job on the built-in sample archive, no network needed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="generate the built-in sample archive and run the main job on it",
        description=(
            "Write the deterministic sample archive (4 patients, CT and MR, private tags, a few "
            "broken files) under DEST, scan it into a Parquet catalog and summarise it."
        ),
    )
    p.add_argument("dest", nargs="?", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import polars as pl

    from ..catalog import scan
    from ..sample import make_sample

    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{dest} is a file: the demo writes a folder there, name another")
    info = make_sample(dest / "archive", seed=args.seed)
    print(f"sample archive: {len(info.files)} DICOM files + {len(info.broken)} broken files "
          f"under {info.root}")  # fmt: skip
    catalog = scan(info.root)
    out = dest / "catalog.parquet"
    stats = catalog.to_parquet(out)
    df = pl.read_parquet(out)
    print(f"catalog: {out} ({df.height} rows x {df.width} columns, "
          f"{stats.files_per_second:,.0f} files/s)\n")  # fmt: skip
    with pl.Config(tbl_rows=12, tbl_cols=8, fmt_str_lengths=60, tbl_width_chars=120):
        print(
            df.filter(pl.col("error").is_null())
            .group_by("PatientID", "Modality", "SeriesDescription")
            .agg(
                pl.len().alias("instances"),
                pl.col("number_of_frames").sum().alias("frames"),
                pl.col("StudyDate").first(),
                pl.col("Rows").first(),
                pl.col("Columns").first(),
            )
            .sort("PatientID", "Modality", "SeriesDescription")
        )
        errors = df.filter(pl.col("error").is_not_null()).select(
            pl.col("uri").str.split("/").list.last().alias("file"), "error"
        )
        print(f"\n{errors.height} files could not be read (kept as rows with the reason):")
        print(errors)
    good = df.filter(pl.col("error").is_null())
    print(
        f"\n{good['PatientID'].n_unique()} patients, {good['study_instance_uid'].n_unique()} "
        f"studies, {good['series_instance_uid'].n_unique()} series, "
        f"{stats.instances} instances, {stats.errors} errors"
    )
    return 0
