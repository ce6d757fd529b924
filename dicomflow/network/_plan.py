"""A pull's plan: the series a query (or every row of a cohort) matches, by C-FIND or QIDO-RS.

Study-level C-FIND with the query's patient and study keys (``Modality`` asked as
``ModalitiesInStudy``), then a series-level C-FIND per study with its series keys, which are
applied again here for peers that ignore them. A cohort's rows are all planned before anything
is fetched, and their series de-duplicated into one table whose ``cohort_rows`` column says
which rows matched each series; a study matched by several rows is asked for its series once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..errors import ConfigError
from ._cohort import Cohort
from ._options import AssociationOptions, Peer
from ._query import _KEY_LEVEL, level_keys
from .dicomweb import DicomWeb, DicomWebOptions
from .scu import find

__all__ = [
    "Asking",
    "Remote",
    "as_remote",
    "check_series_keys",
    "empty_plan",
    "plan_cohort",
    "query_series",
    "search",
]


def _is_plain(value: Any) -> bool:
    text = str(value)
    return bool(text) and not any(c in text for c in "*?\\-")


Remote = Peer | DicomWeb


def as_remote(peer: Peer | DicomWeb | DicomWebOptions | str) -> Remote:
    """A peer as given: ``AE@HOST:PORT`` (DIMSE) or an ``http(s)://`` URL (DICOMweb)."""
    if isinstance(peer, (Peer, DicomWeb)):
        return peer
    if isinstance(peer, DicomWebOptions):
        return DicomWeb(peer)
    text = str(peer).strip()
    if text.startswith(("http://", "https://")):
        return DicomWeb(text)
    try:
        return Peer.parse(text)
    except ConfigError as exc:
        raise ConfigError(f"{exc}; or a DICOMweb URL, e.g. https://pacs/dicom-web") from None


@dataclass(frozen=True)
class Asking:
    """How to ask: the DIMSE information model and association options (unused by
    DICOMweb)."""

    model: str = "study"
    assoc: AssociationOptions | None = None


def search(
    remote: Remote,
    level: str,
    keys: Mapping[str, Any],
    asking: Asking,
    columns: Sequence[str] = (),
) -> pa.Table:
    """C-FIND (DIMSE) or QIDO-RS (DICOMweb) at ``level``; the same table either way."""
    if isinstance(remote, DicomWeb):
        rest = dict(keys)
        study = rest.pop("StudyInstanceUID", None) if level != "study" else None
        series = rest.pop("SeriesInstanceUID", None) if level == "image" else None
        return remote.search(level, rest, study=study, series=series, columns=columns)
    return find(remote, keys, level=level, model=asking.model, options=asking.assoc,
                columns=columns)  # fmt: skip


def check_series_keys(keys: Mapping[str, Any], where: str = "") -> None:
    per_instance = [k for k in keys if _KEY_LEVEL.get(k) == "IMAGE"]
    if per_instance:
        raise ConfigError(
            f"{where}a pull fetches whole series: {', '.join(per_instance)} is an image-level "
            "attribute, which cannot choose series (filter the lake afterwards, e.g. with "
            "dicomflow scan)"
        )


def query_series(
    remote: Remote,
    keys: Mapping[str, Any],
    asking: Asking,
    cache: dict[tuple[str, tuple[tuple[str, str], ...]], pa.Table],
) -> pa.Table | None:
    """The series one query matches (study C-FIND, then series C-FIND per study); None when
    nothing matched. ``cache`` keeps series answers per study for the other cohort rows."""
    study_keys = level_keys(keys, "STUDY")
    study_keys.pop("Modality", None)
    studies = search(remote, "study", study_keys, asking, columns=("SOPClassesInStudy",))
    series_keys = {
        k: v for k, v in keys.items() if _KEY_LEVEL.get(k, "SERIES") in ("SERIES", "IMAGE")
    }
    series_keys = {k: v for k, v in series_keys.items() if _KEY_LEVEL.get(k) != "IMAGE"}
    signature = tuple(sorted((k, str(v)) for k, v in series_keys.items()))
    tables = []
    for row in studies.to_pylist():
        uid = row["study_instance_uid"]
        if not uid:
            continue
        found = cache.get((uid, signature))
        if found is None:
            ident = {"StudyInstanceUID": uid, **series_keys}
            if asking.model == "patient" and not isinstance(remote, DicomWeb):
                ident["PatientID"] = row.get("PatientID") or ""
            found = search(remote, "series", ident, asking)
            n = found.num_rows
            found = found.append_column(
                "PatientID", pa.array([row.get("PatientID")] * n, pa.string())
            )
            found = found.append_column(
                "StudyDate", pa.array([row.get("StudyDate")] * n, pa.date32())
            )
            classes = row.get("SOPClassesInStudy") or []
            found = found.append_column(
                "SOPClassesInStudy", pa.array([list(classes)] * n, pa.list_(pa.string()))
            )
            cache[(uid, signature)] = found
        if found.num_rows:
            tables.append(found)
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="default")
    for key, value in series_keys.items():  # peers that ignore a key still get it applied
        if key in table.column_names and _is_plain(value):
            values = table.column(key).to_pylist()
            keep = [v is None or str(v) == str(value) for v in values]
            table = table.filter(pa.array(keep))
    return table if table.num_rows else None


def empty_plan() -> pa.Table:
    return pa.table(
        {
            "study_instance_uid": pa.array([], pa.string()),
            "series_instance_uid": pa.array([], pa.string()),
        }
    )


def plan_cohort(
    remote: Remote,
    cohort: Cohort,
    asking: Asking,
    on_row: Callable[[int, int], None] | None = None,
) -> pa.Table:
    """Every row's queries first, then the series de-duplicated across rows; the column
    ``cohort_rows`` lists the rows (their numbers) that matched each series."""
    for row in cohort.rows:
        check_series_keys(row.keys, f"{cohort.source}, row {row.number}: ")
    cache: dict[tuple[str, tuple[tuple[str, str], ...]], pa.Table] = {}
    tables = []
    for i, row in enumerate(cohort.rows, 1):
        found = query_series(remote, row.keys, asking, cache)
        if found is not None:
            n = found.num_rows
            tables.append(found.append_column("_row", pa.array([row.number] * n, pa.int32())))
        if on_row is not None:
            on_row(i, len(cohort.rows))
    if not tables:
        return empty_plan().append_column("cohort_rows", pa.array([], pa.list_(pa.int32())))
    table = pa.concat_tables(tables, promote_options="default")
    first: dict[tuple[str, str], int] = {}
    rows_of: list[list[int]] = []
    take: list[int] = []
    keys = zip(
        table.column("study_instance_uid").to_pylist(),
        table.column("series_instance_uid").to_pylist(),
        strict=True,
    )
    for i, (key, number) in enumerate(zip(keys, table.column("_row").to_pylist(), strict=True)):
        if key in first:
            if number not in rows_of[first[key]]:
                rows_of[first[key]].append(number)
            continue
        first[key] = len(take)
        take.append(i)
        rows_of.append([number])
    table = table.take(pa.array(take, pa.int64())).drop_columns(["_row"])
    return table.append_column("cohort_rows", pa.array(rows_of, pa.list_(pa.int32())))
