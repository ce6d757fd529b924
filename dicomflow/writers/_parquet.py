"""Sink: a partitioned Parquet catalog of what a pipeline wrote."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..catalog import scan, write_dataset

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["ParquetDataset"]


def written_paths(manifest: pa.Table, sink: str) -> list[str]:
    """What a run's catalog sink catalogs: the files the run's other sinks wrote for its done
    instances, or their sources when no other sink wrote any."""
    done = [r for r in manifest.to_pylist() if r["status"] == "done"]
    paths = [o["path"] for r in done for o in r["outputs"] if o["sink"] != sink]
    return paths or [r["source_uri"] for r in done]


class ParquetDataset:
    """Sink: a partitioned Parquet catalog of what the pipeline wrote (appended per run).

    At the end of a run it scans the files the other sinks wrote (or, alone, the inputs that
    were done) and appends their catalog rows to the dataset at ``root``.
    """

    name = "parquet"

    def __init__(
        self,
        root: str | os.PathLike[str],
        partition_by: tuple[str, ...] | list[str] = (),
        columns: Any = "default",
    ):
        self.root = os.fspath(root)
        self.partition_by = tuple(partition_by)
        self.columns = columns

    def config(self) -> dict[str, Any]:
        return {"type": "parquet", "root": self.root, "partition_by": list(self.partition_by)}

    def open(self, context: Any) -> None:
        pass

    def write(self, instance: Any) -> list[Any]:
        return []

    def close(self, context: Any, manifest: pa.Table) -> None:
        paths = written_paths(manifest, self.name)
        if paths:
            write_dataset(
                scan(paths, columns=self.columns), self.root, partition_by=self.partition_by
            )
