"""The manifest: one row per input instance of a run, written as the run goes.

Finished rows are appended as Parquet parts under ``<dir>/run-<id>/`` (written atomically), a
part once a task's worth (``batch_size`` rows) has finished and half a second has passed since
the last part, so a run killed at any moment leaves a manifest of all it finished but its last
rows; a rerun reads every run's rows to skip what is done. When a run ends, its parts are
merged into ``<dir>/run-<id>.parquet``.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..dicom import atomic_path

__all__ = ["MANIFEST_SCHEMA", "ManifestWriter", "done_inputs", "read_manifests"]

#: one :class:`~dicomflow.pipeline.Output` (its fields, in order; ``Output.record()``)
OUTPUT_TYPE = pa.struct(
    [("sink", pa.string()), ("path", pa.string()), ("sha256", pa.string()), ("size", pa.int64())]
)
MANIFEST_SCHEMA = pa.schema(
    [
        ("source_uri", pa.string()),
        ("sop_instance_uid", pa.string()),
        ("status", pa.string()),  # done | skipped | failed
        ("reason", pa.string()),
        ("stage", pa.string()),
        ("outputs", pa.list_(OUTPUT_TYPE)),
        ("counts", pa.string()),  # JSON object: what stages did (e.g. de-identification actions)
        ("seconds", pa.float64()),
        ("resumed_from", pa.string()),  # run id whose result this row carries over
        ("run_id", pa.string()),
        ("config_hash", pa.string()),
        ("version", pa.string()),
    ]
)


def manifest_table(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    table_rows = [dict(r) for r in rows]
    for row in table_rows:
        counts = row.get("counts")
        if counts is not None and not isinstance(counts, str):
            row["counts"] = json.dumps(counts, sort_keys=True)
    return pa.Table.from_pylist(table_rows, schema=MANIFEST_SCHEMA)


class ManifestWriter:
    """Appends parts for one run; merges them when the run ends."""

    def __init__(self, folder: str, run_id: str, config: Mapping[str, Any]):
        self.folder = folder
        self.run_id = run_id
        self.parts_dir = os.path.join(folder, f"run-{run_id}")
        self.metadata = {b"dicomflow.pipeline": json.dumps(config, sort_keys=True).encode()}
        self._count = 0
        self._tables: list[pa.Table] = []  # what the parts hold, in order
        os.makedirs(self.parts_dir, exist_ok=True)

    def append(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        table = manifest_table(rows)
        path = os.path.join(self.parts_dir, f"part-{self._count:06d}.parquet")
        with atomic_path(path) as tmp:
            pq.write_table(table.replace_schema_metadata(self.metadata), tmp)
        self._tables.append(table)
        self._count += 1

    def rows(self) -> pa.Table:
        """Every row appended so far, in order (``manifest_table`` of them all)."""
        return pa.concat_tables(self._tables) if self._tables else MANIFEST_SCHEMA.empty_table()

    def finish(self, rows: pa.Table | None = None) -> str:
        """Merge the parts into ``run-<id>.parquet`` (atomically) and return its path.

        ``rows``: every row appended, in order, as the caller already holds them (what the
        parts hold: they are then not read back).
        """
        parts = sorted(glob.glob(os.path.join(self.parts_dir, "part-*.parquet")))
        if rows is not None:
            table = rows
        else:
            tables = [pq.read_table(p) for p in parts]
            table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
        final = os.path.join(self.folder, f"run-{self.run_id}.parquet")
        with atomic_path(final) as tmp:
            pq.write_table(table.replace_schema_metadata(self.metadata), tmp)
        for p in parts:
            os.unlink(p)
        os.rmdir(self.parts_dir)
        return final


def read_manifests(folder: str) -> pa.Table:
    """Every manifest row under ``folder``: finished runs and parts of interrupted ones."""
    paths = sorted(glob.glob(os.path.join(folder, "run-*.parquet")))
    paths += sorted(glob.glob(os.path.join(folder, "run-*", "part-*.parquet")))
    tables = []
    for p in paths:
        try:
            tables.append(pq.read_table(p, schema=MANIFEST_SCHEMA))
        except (OSError, pa.ArrowInvalid):
            continue  # a part cut short by a crash is not trusted: its inputs are redone
    return pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()


def done_inputs(folder: str, config_hash: str) -> dict[tuple[str, str | None], dict[str, Any]]:
    """``(source_uri, sop_instance_uid) -> row`` of inputs already done with this configuration."""
    table = read_manifests(folder)
    done: dict[tuple[str, str | None], dict[str, Any]] = {}
    if not table.num_rows:
        return done
    # the rows of other configurations or not done are left in Arrow (every earlier run's rows
    # are read: made Python objects, they cost a rerun its start, in this process)
    ours = pc.and_(pc.equal(table["status"], "done"), pc.equal(table["config_hash"], config_hash))
    for row in table.filter(ours).to_pylist():
        if all(_present(o) for o in row["outputs"] or ()):
            done[(row["source_uri"], row["sop_instance_uid"])] = row
    return done


def _present(output: Mapping[str, Any]) -> bool:
    """A recorded output is still there, whole (local files; remote ones are trusted).

    A file of the wrong size at a recorded path (cut short by a power loss) is this run's own
    damaged output: it is removed so that the input is redone and written again.
    """
    path = output["path"]
    if "://" in path or "::" in path:
        return True
    try:
        if os.stat(path).st_size == output["size"]:
            return True
    except OSError:
        return False
    os.unlink(path)
    return False
