"""The partitioned Parquet dataset writer (``write_dataset``, the Parquet ``TableWriter``): the
same folders and rows as pyarrow's own ``write_dataset``, without its background writer, whose
threads can abort the interpreter at exit (apache/arrow #36980)."""

from __future__ import annotations

import datetime
import subprocess
import sys

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

import dicomflow as dfl
from dicomflow.catalog import write_dataset


def _tricky() -> pa.Table:
    return pa.table(
        {
            "Modality": ["CT", "MR", None, "C T/x", "CT", "MR", "ü=1", None],
            "Day": pa.array([datetime.date(2024, 1, d % 3 + 1) for d in range(8)]),
            "Number": pa.array([1, 2, 3, 4, 5, 6, 7, 8], pa.int32()),
            "uri": [f"/a/{i}.dcm" for i in range(8)],
        }
    )


def _layout(root) -> dict[str, list[dict]]:
    """Each part file's folder, relative to ``root``, with the rows it holds."""
    held: dict[str, list[dict]] = {}
    for path in sorted(root.rglob("*.parquet")):
        held.setdefault(str(path.parent.relative_to(root)), []).extend(
            pq.read_table(path).to_pylist()
        )
    return held


@pytest.mark.parametrize("partition_by", [(), ("Modality",), ("Modality", "Day")])
def test_partitions_match_pyarrows_write_dataset(tmp_path, partition_by):
    table = _tricky()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    write_dataset(table, ours, partition_by=partition_by)
    pads.write_dataset(
        table,
        theirs,
        format="parquet",
        partitioning=list(partition_by) or None,
        partitioning_flavor="hive" if partition_by else None,
    )
    assert _layout(ours) == _layout(theirs)
    assert len(_layout(ours)) == {(): 1, ("Modality",): 5, ("Modality", "Day"): 8}[partition_by]
    back = pads.dataset(ours, partitioning="hive").to_table().sort_by("Number")
    assert back.column("uri").to_pylist() == table.column("uri").to_pylist()


def test_the_dataset_writer_of_pyarrow_is_not_used(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pyarrow.dataset.write_dataset was called")

    monkeypatch.setattr(pads, "write_dataset", refuse)
    write_dataset(_tricky(), tmp_path / "d", partition_by=("Modality",))
    writer = dfl.TableWriter(str(tmp_path / "t"), "parquet", partition_by=["Modality"])
    assert writer.append(_tricky(), "b1")
    assert writer.read().num_rows == 8


APPENDS = """
import sys
import pyarrow as pa
import dicomflow as dfl
table = pa.table({"uri": [f"/x/{i}" for i in range(3000)], "Modality": ["CT", "MR", "US"] * 1000})
writer = dfl.TableWriter(sys.argv[1], "parquet")
for i in range(6):
    writer.append(table.slice(i * 500, 500), f"b{i}")
"""


def test_processes_that_append_then_exit_exit_cleanly(tmp_path):
    """Before, about 1 such process in 10 aborted at exit ("terminate called without an
    active exception", status -6) after its appends had completed."""
    codes = []
    for i in range(12):
        done = subprocess.run(
            [sys.executable, "-c", APPENDS, str(tmp_path / f"t{i}")], capture_output=True, text=True
        )
        codes.append((done.returncode, done.stderr[-200:]))
        assert dfl.read_table(str(tmp_path / f"t{i}"), "parquet").num_rows == 3000
    assert [c for c in codes if c[0] != 0] == []
