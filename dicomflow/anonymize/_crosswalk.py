"""The crosswalk on disk: original <-> pseudonym pairs, kept apart from the shared output.

Workers never talk to each other, so each de-identified instance writes its pairs as one small
Parquet part under ``<crosswalk>.parts/``, named by a keyed hash of the instance's source (a
rerun rewrites the same part, so resuming never duplicates anything). `merge_crosswalk` folds
the parts, and an earlier crosswalk at the same path, into one Parquet file with one row per
``(keyword, original)``, sorted; `read_crosswalk` gives the same table without writing it.

Why parts and not the manifest: the manifest sits beside the shared output and is meant to be
read by anyone who gets it, so identifying originals must never go through it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..dicom import atomic_path
from ..errors import ConfigError

__all__ = [
    "CROSSWALK_SCHEMA",
    "check_apart",
    "merge_crosswalk",
    "output_root_above",
    "read_crosswalk",
    "write_part",
]

CROSSWALK_SCHEMA = pa.schema(
    [("keyword", pa.string()), ("original", pa.string()), ("replacement", pa.string())]
)


def parts_folder(path: str | os.PathLike[str]) -> str:
    """Where the workers' parts of the crosswalk at ``path`` go."""
    return os.fspath(path) + ".parts"


def _atomic_table(table: pa.Table, path: str) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_part(path: str | os.PathLike[str], name: str, rows: Iterable[tuple[str, str, str]]):
    """Write one instance's pairs as the part ``name`` of the crosswalk at ``path``."""
    rows = list(rows)
    table = pa.table(
        {
            "keyword": [r[0] for r in rows],
            "original": [r[1] for r in rows],
            "replacement": [r[2] for r in rows],
        },
        schema=CROSSWALK_SCHEMA,
    )
    _atomic_table(table, os.path.join(parts_folder(path), f"{name}.parquet"))


def _dedupe(tables: list[pa.Table]) -> pa.Table:
    seen: dict[tuple[str, str], str] = {}
    for table in tables:
        for keyword, original, replacement in zip(
            *(table.column(c).to_pylist() for c in CROSSWALK_SCHEMA.names), strict=True
        ):
            seen.setdefault((keyword, original), replacement)
    keys = sorted(seen)
    return pa.table(
        {
            "keyword": [k for k, _ in keys],
            "original": [o for _, o in keys],
            "replacement": [seen[k] for k in keys],
        },
        schema=CROSSWALK_SCHEMA,
    )


def _tables(path: str) -> tuple[list[pa.Table], list[str]]:
    tables = []
    if os.path.isfile(path):
        tables.append(pq.read_table(path, schema=CROSSWALK_SCHEMA))
    parts = sorted(glob.glob(os.path.join(parts_folder(path), "*.parquet")))
    for part in parts:
        try:
            tables.append(pq.read_table(part, schema=CROSSWALK_SCHEMA))
        except (OSError, pa.ArrowInvalid):
            continue  # cut short by a crash: that instance is redone, and writes it again
    return tables, parts


def read_crosswalk(path: str | os.PathLike[str]) -> pa.Table:
    """The crosswalk at ``path`` with any parts not merged yet: keyword, original, replacement.

    Examples
    --------
    >>> read_crosswalk("/nonexistent/crosswalk.parquet").num_rows
    0
    """
    tables, _ = _tables(os.fspath(path))
    return _dedupe(tables)


def merge_crosswalk(path: str | os.PathLike[str]) -> int:
    """Fold the workers' parts into the Parquet file at ``path``; the number of pairs in it.

    An earlier crosswalk at ``path`` is kept and extended; the parts are removed once merged.
    """
    path = os.fspath(path)
    tables, parts = _tables(path)
    if not parts:
        return pq.read_metadata(path).num_rows if os.path.isfile(path) else 0
    table = _dedupe(tables)
    _atomic_table(table, path)
    for part in parts:
        os.unlink(part)
    try:
        os.rmdir(parts_folder(path))
    except OSError:
        pass  # a worker of another run is still writing there
    return table.num_rows


def output_root_above(path: str | os.PathLike[str]) -> str | None:
    """The nearest folder at or above ``path``'s folder that looks like a dicomflow output.

    A folder is taken for one when it holds a ``.dicomflow`` folder (a Part 10 folder sink's
    manifests), a ``DICOMDIR`` (a media set), a ``_lake`` folder (a lake's records), or has a
    ``<folder>.manifests`` sibling.
    """
    folder = Path(os.path.abspath(os.fspath(path))).parent
    for candidate in (folder, *folder.parents):
        if (
            (candidate / ".dicomflow").is_dir()
            or (candidate / "DICOMDIR").is_file()
            or (candidate / "_lake").is_dir()
            or Path(f"{candidate}.manifests").is_dir()
        ):
            return str(candidate)
    return None


def check_apart(crosswalk: str | os.PathLike[str], *roots: str | os.PathLike[str]) -> None:
    """Refuse a crosswalk inside any of ``roots`` (the shared output folders).

    Raises
    ------
    ConfigError
        The crosswalk (or its parts folder) would be written inside an output root.
    """
    target = Path(os.path.abspath(os.fspath(crosswalk)))
    for root in roots:
        if "://" in str(root):
            continue
        base = Path(os.path.abspath(os.fspath(root)))
        if target == base or base in target.parents:
            raise ConfigError(
                f"the crosswalk {crosswalk} would be inside the output {root}: it links "
                "pseudonyms back to patients, so keep it in a separate, private location"
            )
