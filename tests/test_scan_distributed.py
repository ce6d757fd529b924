"""The same partitions on one process, a process pool, and a real dask.distributed cluster."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import dicomflow as dfl


@pytest.fixture(scope="module")
def files(corpus: Path) -> list[str]:
    picked = []
    for folder in ("modality", "transfer-syntax", "broken", "charsets"):
        picked += sorted(str(p) for p in (corpus / folder).rglob("*") if p.is_file())
    return picked


@pytest.fixture(scope="module")
def in_process(files) -> pa.Table:
    return dfl.scan(files, workers=1, batch_size=16).to_arrow()


def test_process_pool_gives_identical_table(files, in_process) -> None:
    pooled = dfl.scan(files, workers=2, batch_size=16).to_arrow()
    assert pooled.equals(in_process)


def test_process_pool_keeps_schema_metadata_and_headers(files) -> None:
    # a worker's batch comes back as an Arrow IPC stream: types, field metadata and the
    # header column arrive as they were built
    for header in ("json", "raw"):
        one = dfl.scan(files, workers=1, batch_size=16, header=header).to_arrow()
        two = dfl.scan(files, workers=2, batch_size=16, header=header).to_arrow()
        assert two.schema.equals(one.schema, check_metadata=True)
        assert two.equals(one)
        assert two.column("header").null_count < two.num_rows


def test_pools_start_only_for_three_batches_or_more(files, monkeypatch) -> None:
    started = []
    init = dfl.runtime.ProcessExecutor.__init__

    def counted(self, *args, **kwargs):
        started.append(args)
        init(self, *args, **kwargs)

    monkeypatch.setattr(dfl.runtime.ProcessExecutor, "__init__", counted)
    small = dfl.scan(files[:32], workers=2, batch_size=16).to_arrow()  # two batches
    assert started == [] and small.num_rows == 32
    dfl.scan(files[:48], workers=2, batch_size=16).to_arrow()  # three
    assert len(started) == 1


def test_batching_does_not_change_the_result(files, in_process) -> None:
    assert dfl.scan(files, workers=1, batch_size=7).to_arrow().equals(in_process)


def test_all_columns_union_is_deterministic(files) -> None:
    a = dfl.scan(files, columns="all", workers=1, batch_size=5).to_arrow()
    b = dfl.scan(files, columns="all", workers=2, batch_size=64).to_arrow()
    assert a.schema.names == b.schema.names
    assert a.equals(b)
    assert "PatientName" in a.schema.names and "SOPInstanceUID" not in a.schema.names
    assert a.num_rows == len(files)


def test_dask_local_cluster_gives_identical_table(files, in_process, dask_client) -> None:
    on_cluster = dfl.scan(files, client=dask_client, batch_size=16).to_arrow()
    assert on_cluster.equals(in_process)
    # and as a dask DataFrame, computed on the cluster
    frame = dfl.scan(files, batch_size=16).to_dask()
    assert frame.npartitions == -(-len(files) // 16)
    computed = frame.compute(scheduler=dask_client)
    assert list(computed["uri"]) == in_process.column("uri").to_pylist()
    assert list(computed["sop_instance_uid"].fillna("")) == [
        u or "" for u in in_process.column("sop_instance_uid").to_pylist()
    ]


def test_polars_views(files, in_process) -> None:
    import polars as pl

    cat = dfl.scan(files, workers=1, batch_size=16)
    df = cat.to_polars()
    assert isinstance(df, pl.DataFrame) and df.height == in_process.num_rows
    lazy = cat.lazy()
    assert isinstance(lazy, pl.LazyFrame)
    counts = lazy.filter(pl.col("error").is_null()).group_by("Modality").len().collect()
    assert counts["len"].sum() == in_process["error"].null_count
