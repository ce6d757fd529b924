"""Parquet catalogs: one atomic file, or an appendable hive-partitioned dataset."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

import dicomflow as dfl
from dicomflow.sample import make_sample


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    make_sample(root)
    return root


def test_single_file_has_the_catalog_schema(sample: Path, tmp_path: Path) -> None:
    cat = dfl.scan(sample, workers=1)
    stats = cat.to_parquet(tmp_path / "c.parquet")
    table = pq.read_table(tmp_path / "c.parquet")
    assert table.schema.equals(cat.schema)
    assert table.num_rows == stats.files == 132 and stats.errors == 3
    assert list(tmp_path.iterdir()) == [tmp_path / "c.parquet"]  # no temporary left


def test_failed_write_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "c.parquet"
    with pytest.raises(dfl.SourceNotFoundError):
        dfl.scan([str(tmp_path / "missing")], workers=1).to_parquet(out)
    assert not list(tmp_path.iterdir())


def test_partitioned_dataset_appends(sample: Path, tmp_path: Path) -> None:
    dfl.scan(sample, workers=1).to_parquet(tmp_path / "lake", partition_by=["Modality"])
    dfl.scan(sample, workers=1).to_parquet(tmp_path / "lake", partition_by=["Modality"])
    df = pl.scan_parquet(str(tmp_path / "lake" / "**" / "*.parquet"), hive_partitioning=True)
    counts = dict(df.group_by("Modality").len().collect().iter_rows())
    once = dict(dfl.scan(sample, workers=1).to_polars().group_by("Modality").len().iter_rows())
    assert counts == {k: 2 * v for k, v in once.items()}  # two appends of the sample
    assert counts["MR"] == 2 * 56
    assert {p.name for p in (tmp_path / "lake").iterdir()} >= {"Modality=CT", "Modality=MR"}


def test_parquet_sink_catalogs_what_a_pipeline_wrote(sample: Path, tmp_path: Path) -> None:
    report = (
        (dfl.pipeline(dfl.scan(sample)) | dfl.filter("Modality = 'MR'"))
        .write(
            dfl.writers.Part10Folder(str(tmp_path / "out")),
            dfl.writers.ParquetDataset(tmp_path / "catalog", partition_by=["SeriesDescription"]),
        )
        .execute(workers=1)
    )
    df = pl.read_parquet(str(tmp_path / "catalog" / "**" / "*.parquet"), hive_partitioning=True)
    assert df.height == report.done == 56
    assert all(u.startswith(str(tmp_path / "out")) for u in df["uri"])
    assert df["error"].null_count() == df.height


def test_columns_all_across_batches_of_different_attributes(corpus: Path, tmp_path: Path) -> None:
    """Small batches of the public corpus have different attribute sets: one unified schema."""
    source = str(corpus / "modality")
    whole = dfl.scan(source, columns="all", batch_size=4, workers=1).to_arrow()
    schemas = {b.schema for b in dfl.scan(source, columns="all", batch_size=4, workers=1)}
    assert len(schemas) > 1  # the case: batches disagree on their columns

    dfl.scan(source, columns="all", batch_size=4, workers=1).to_parquet(tmp_path / "all.parquet")
    one = pq.read_table(tmp_path / "all.parquet")
    assert set(one.column_names) == set(whole.column_names)
    key = [("uri", "ascending")]
    assert one.select(whole.column_names).sort_by(key).equals(whole.sort_by(key))

    lake = tmp_path / "lake"
    dfl.scan(source, columns="all", batch_size=4, workers=1).to_parquet(
        lake, partition_by=["Modality"]
    )
    back = pl.read_parquet(lake / "**" / "*.parquet", hive_partitioning=True)
    assert back.height == whole.num_rows
    assert set(back.columns) == set(whole.column_names)
