"""Incremental scans: add to an existing catalog only the files it does not hold as they are now.

A file is *unchanged* when the catalog has a row with its URI, its size and its modification
time (the size alone where either side does not know the time: an old catalog, an HTTP
listing); *changed* when the URI is there with another size or time; *new* otherwise. Only new
and changed files are read. Rows of files no longer listed stay: the catalog records what was
seen.

The update is crash-safe in both layouts. One Parquet file is rewritten whole, atomically (old
rows of unchanged files, then the new rows). In a partitioned dataset the parts holding rows of
changed files are rewritten without them first, then the new rows are appended: a run killed in
between leaves those files out of the catalog, and the next run finds them new.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..dicom import atomic_path
from ._sources import FileRef, _is_url

if TYPE_CHECKING:
    from ._catalog import Catalog, ScanStats

__all__ = ["Known", "update_catalog"]


@dataclass
class Known:
    """The files a catalog holds: URI -> (size, modified), and what a listing did against it."""

    files: Mapping[str, tuple[int | None, int | None]]
    unchanged: int = 0
    changed: set[str] = field(default_factory=set)

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Known:
        """The files of the catalog at ``path`` (a Parquet file or a partitioned folder);
        none when it does not exist yet."""
        if not os.path.exists(path):
            return cls({})
        names = set(pq.read_schema(_any_part(path)).names)
        wanted = [c for c in ("uri", "size", "modified") if c in names]
        table = pq.read_table(path, columns=wanted)
        uris = table.column("uri").to_pylist()
        sizes = table.column("size").to_pylist() if "size" in names else [None] * len(uris)
        if "modified" in names:
            times = table.column("modified").cast(pa.int64()).to_pylist()
        else:  # a catalog written before the column existed: sizes only
            times = [None] * len(uris)
        return cls(dict(zip(uris, zip(sizes, times, strict=True), strict=True)))

    def new_or_changed(self, refs: Iterable[FileRef]) -> Iterator[FileRef]:
        """The listed files to read; counts the unchanged ones and remembers the changed."""
        for uri, size, modified in refs:
            held = self.files.get(uri)
            if held is None:
                yield uri, size, modified
                continue
            if not _is_url(uri):
                try:
                    st = os.stat(uri)
                except OSError:  # gone or unreadable since it was listed: read it, get a row
                    yield uri, size, modified
                    continue
                size, modified = st.st_size, st.st_mtime_ns // 1000
            old_size, old_time = held
            same_time = old_time is None or modified is None or old_time == modified
            if old_size == size and same_time:
                self.unchanged += 1
                continue
            self.changed.add(uri)
            yield uri, size, modified


def _any_part(path: str | os.PathLike[str]) -> str:
    if os.path.isfile(path):
        return os.fspath(path)
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".parquet") and not name.startswith("."):
                return os.path.join(root, name)
    raise FileNotFoundError(f"no Parquet file under {os.fspath(path)!r}")


def _parts(root: str) -> list[str]:
    found = []
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(here, n) for n in files if n.endswith(".parquet")]
    return sorted(n for n in found if not os.path.basename(n).startswith("."))


def update_catalog(
    catalog: Catalog,
    path: str | os.PathLike[str],
    *,
    partition_by: tuple[str, ...] = (),
    progress: Any = None,
) -> ScanStats:
    """Scan only what the catalog at ``path`` lacks and write the catalog updated.

    Returns the scan's counters; ``unchanged`` counts the files left as they were and
    ``replaced`` the rows of changed files that were read again.
    """
    from ._catalog import unify
    from ._parquet import write_dataset

    known = Known.read(path)
    scan = catalog.only(known.new_or_changed)
    table = unify(list(scan.iter_batches(progress)), scan.schema)
    stats = scan.stats
    stats.unchanged, stats.replaced = known.unchanged, len(known.changed)
    if partition_by:
        _drop_rows(os.fspath(path), known.changed)
        if table.num_rows:
            write_dataset(table, path, partition_by=partition_by)
        return stats
    if os.path.exists(path):
        old = pq.read_table(path)
        if known.changed:
            keep = pa.array([u not in known.changed for u in old.column("uri").to_pylist()])
            old = old.filter(keep)
        table = unify([old, table], catalog.schema)
    with atomic_path(os.path.abspath(os.fspath(path))) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return stats


def _drop_rows(root: str, uris: set[str]) -> None:
    """Rewrite (atomically) every part of a dataset that holds a row of ``uris``, without it."""
    if not uris or not os.path.isdir(root):
        return
    for part in _parts(root):
        held = pq.read_table(part, columns=["uri"]).column("uri").to_pylist()
        keep = [u not in uris for u in held]
        if all(keep):
            continue
        table = pq.read_table(part, partitioning=None).filter(pa.array(keep))
        if table.num_rows == 0:
            os.unlink(part)
            continue
        with atomic_path(part) as tmp:
            pq.write_table(table, tmp, compression="zstd")
