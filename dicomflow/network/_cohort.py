"""Cohorts: a table of queries, one a row, pulled as one plan; and what each row matched.

A cohort is what a study protocol hands over: a spreadsheet with a row per subject or exam.
Its column names are DICOM keywords (``AccessionNumber``, ``PatientID``,
``StudyInstanceUID``, ``StudyDate``...), and each row is one query made of its non-empty
cells; rows may use different columns. A date cell is one date or a range, in any form a query
accepts (``2024-01-31``, ``20240101-20240131``, ``2024-01-01..2024-01-31``).

>>> rows = read_cohort([{"AccessionNumber": "A1"}, {"PatientID": "P7", "StudyDate": "2024-01-31"}])
>>> [(r.number, r.keys) for r in rows.rows]
[(1, {'AccessionNumber': 'A1'}), (2, {'PatientID': 'P7', 'StudyDate': '20240131'})]

A row that matches nothing is a finding (a typo, a study not yet archived, the wrong PACS):
:func:`outcome_table` lists it with status ``no match``, beside the rows that matched and
the studies and series each matched.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pydicom.datadict import keyword_dict

from ..errors import ConfigError
from ._query import level_keys, parse_query

__all__ = ["COHORT_COLUMNS", "Cohort", "CohortRow", "outcome_table", "read_cohort"]

#: Errors listed in one message before "and N more".
_SHOWN = 5

#: The outcome table's own columns, after the cohort's (its cells as given).
COHORT_COLUMNS = pa.schema(
    [
        ("row", pa.int32()),  # 1-based, in the order of the cohort (the CSV's data rows)
        ("query", pa.string()),  # the row as a query, with the pull's common query
        ("status", pa.string()),  # no match, complete, incomplete, deferred
        ("studies", pa.int32()),
        ("series", pa.int32()),
        ("expected", pa.int64()),  # instances in its series (null when a count is unknown)
        ("present", pa.int64()),  # of them in the lake after the pull
        ("study_instance_uids", pa.list_(pa.string())),
        ("series_instance_uids", pa.list_(pa.string())),
    ]
)


@dataclass(frozen=True)
class CohortRow:
    """One row of a cohort: its number (1-based), its cells as given, its query keys."""

    number: int
    cells: dict[str, str]
    keys: dict[str, Any]

    @property
    def query(self) -> str:
        """The keys as query text (``AccessionNumber=A1 StudyDate=20240101-20240131``)."""
        return " ".join(f"{k}={_quoted(v)}" for k, v in self.keys.items())


@dataclass(frozen=True)
class Cohort:
    """A cohort's columns (in order) and rows; ``source`` names it in messages."""

    columns: tuple[str, ...]
    rows: tuple[CohortRow, ...]
    source: str = "the cohort"


def _quoted(value: Any) -> str:
    text = "" if value is None else str(value)
    return f'"{text}"' if not text or any(c.isspace() for c in text) else text


def _records(source: Any) -> tuple[str, list[str], Sequence[Mapping[str, Any]]]:
    """(name, columns, rows) of a CSV/TSV/Parquet path, an Arrow table, a data frame or a
    sequence of mappings."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            return path, list(table.column_names), table.to_pylist()
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:
                text = f.read()
        except FileNotFoundError as exc:
            raise ConfigError(f"cohort {path!r} does not exist") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cohort {path!r} is not UTF-8 text: {exc}") from exc
        first = text.splitlines()[0] if text.strip() else ""
        delimiter = "\t" if path.endswith(".tsv") or "\t" in first else ","
        if delimiter == "," and ";" in first and "," not in first:
            delimiter = ";"  # spreadsheets set to a decimal comma write ';'
        reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
        rows = list(reader)
        columns = [c for c in (reader.fieldnames or [])]
        if any(None in r for r in rows):
            bad = next(i for i, r in enumerate(rows, 1) if None in r)
            raise ConfigError(f"cohort {path!r}: row {bad} has more cells than the header")
        return path, columns, rows
    if isinstance(source, pa.Table):
        return "the cohort table", list(source.column_names), source.to_pylist()
    if hasattr(source, "to_arrow"):  # polars
        table = source.to_arrow()
        return "the cohort data frame", list(table.column_names), table.to_pylist()
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # pandas
        columns = [str(c) for c in source.columns]
        return "the cohort data frame", columns, source.to_dict("records")
    if isinstance(source, Iterable) and not isinstance(source, (bytes, Mapping)):
        rows = list(source)
        if not all(isinstance(r, Mapping) for r in rows):
            raise ConfigError("a cohort given as a sequence must hold mappings (one per row)")
        columns = list(dict.fromkeys(k for r in rows for k in r))
        return "the cohort", [str(c) for c in columns], rows
    raise ConfigError(
        f"cohort: expected a CSV path, a table, a data frame or rows, got {type(source).__name__}"
    )


def _cell(value: Any) -> str | dt.date | dt.time | None:
    """A cell as a query value: None when empty (not part of the row's query)."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None  # pandas' empty cell
        if value.is_integer():
            return str(int(value))
    if isinstance(value, (dt.date, dt.time)):  # datetime too; kept for the dates' own rules
        return value
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        as_datetime: dt.datetime = value.to_pydatetime()
        return as_datetime
    text = str(value).strip()
    return text or None


def _check_columns(name: str, columns: Sequence[str]) -> None:
    unknown = [c for c in columns if c not in keyword_dict]
    if not unknown:
        return
    hints = []
    for column in unknown:
        close = difflib.get_close_matches(column, list(keyword_dict), n=1, cutoff=0.8)
        hints.append(f"{column!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    raise ConfigError(
        f"{name}: column names must be DICOM keywords (AccessionNumber, PatientID, "
        f"StudyInstanceUID, StudyDate...); not keywords: {', '.join(hints)}"
    )


def read_cohort(source: Any, query: str | Mapping[str, Any] | None = None) -> Cohort:
    """Read a cohort; every row becomes the query of its non-empty cells plus ``query``.

    Parameters
    ----------
    source
        A CSV file (``,`` or ``;`` separated; ``.tsv`` or a header with tabs: tab
        separated; UTF-8, a spreadsheet's byte order mark allowed), a Parquet file, a
        ``pyarrow.Table``, a pandas or polars data frame, or a sequence of mappings.
    query
        Keys every row's query gets as well (``Modality=CT``); a row may not give a key of
        it a different value.

    Raises
    ------
    ConfigError
        Before any network traffic, naming the rows: a column that is not a DICOM keyword,
        a value that cannot be matched (a date in an unknown form), a key the common query
        gives differently, and a row without any patient- or study-level key (its query
        would ask the PACS for every study it holds).
    """
    name, columns, records = _records(source)
    _check_columns(name, columns)
    common = parse_query(query)
    rows: list[CohortRow] = []
    problems: list[str] = []
    for number, record in enumerate(records, 1):
        cells = {c: _cell(record.get(c)) for c in columns}
        given = {c: v for c, v in cells.items() if v is not None}
        try:
            keys = parse_query(given)
        except ConfigError as exc:
            problems.append(f"row {number}: {exc}")
            continue
        clash = [k for k in keys if k in common and str(common[k]) != str(keys[k])]
        if clash:
            problems.append(
                f"row {number}: {', '.join(clash)} differs from the common query "
                f"({', '.join(f'{k}={common[k]}' for k in clash)})"
            )
            continue
        merged = {**common, **keys}
        if not {k: v for k, v in level_keys(merged, "STUDY").items() if v not in (None, "")}:
            what = "is empty" if not given else "has no patient- or study-level value"
            problems.append(
                f"row {number} {what}: its study C-FIND would match every study of the PACS "
                "(give PatientID, AccessionNumber, StudyInstanceUID, StudyDate..., or drop "
                "the row)"
            )
            continue
        text = {c: v if isinstance(v, str) else str(v) for c, v in given.items()}
        rows.append(CohortRow(number, text, merged))
    if problems:
        more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
        raise ConfigError(
            f"{name}: {len(problems)} row(s) cannot be queried: "
            + "; ".join(problems[:_SHOWN])
            + more
        )
    if not rows:
        raise ConfigError(f"{name} has no rows")
    return Cohort(tuple(columns), tuple(rows), name)


def outcome_table(cohort: Cohort, plan: pa.Table, report: pa.Table | None) -> pa.Table:
    """One row per cohort row: its cells, its query, what it matched and how it ended.

    ``plan`` has a ``cohort_rows`` column (the rows each series was matched by); ``report``
    is the pull's report (one row per series), or None before any fetch (status
    ``planned``).
    """
    series_of: dict[int, list[dict[str, Any]]] = {r.number: [] for r in cohort.rows}
    if plan.num_rows and "cohort_rows" in plan.column_names:
        for item in plan.to_pylist():
            for number in item.get("cohort_rows") or []:
                series_of.setdefault(number, []).append(item)
    outcome: dict[str, dict[str, Any]] = {}
    if report is not None:
        for r in report.to_pylist():
            outcome[r["series_instance_uid"]] = r
    out: dict[str, list[Any]] = {c: [] for c in (*cohort.columns, *COHORT_COLUMNS.names)}
    for row in cohort.rows:
        matched = series_of.get(row.number, [])
        for column in cohort.columns:
            out[column].append(row.cells.get(column))
        studies = list(dict.fromkeys(s["study_instance_uid"] for s in matched))
        series = [s["series_instance_uid"] for s in matched]
        results = [outcome.get(uid) for uid in series]
        counts = [s.get("NumberOfSeriesRelatedInstances") for s in matched]
        finals = [r["expected"] if r is not None else None for r in results]
        expected = [f if f is not None else c for f, c in zip(finals, counts, strict=True)]
        present = [r["present_after"] if r is not None else None for r in results]
        out["row"].append(row.number)
        out["query"].append(row.query)
        out["status"].append(_status(matched, results, report is not None))
        out["studies"].append(len(studies))
        out["series"].append(len(series))
        out["expected"].append(
            sum(expected) if matched and all(e is not None for e in expected) else None
        )
        out["present"].append(sum(p or 0 for p in present) if report is not None else None)
        out["study_instance_uids"].append(studies)
        out["series_instance_uids"].append(series)
    fields = [pa.field(c, pa.string()) for c in cohort.columns] + list(COHORT_COLUMNS)
    return pa.Table.from_pydict(out, schema=pa.schema(fields))


def _status(
    matched: list[dict[str, Any]], results: list[dict[str, Any] | None], fetched: bool
) -> str:
    if not matched:
        return "no match"
    if not fetched:
        return "planned"
    statuses = [r["status"] if r is not None else "deferred" for r in results]
    if all(s in ("complete", "already complete") for s in statuses):
        return "complete"
    if any(s == "deferred" for s in statuses) and all(
        s in ("complete", "already complete", "deferred") for s in statuses
    ):
        return "deferred"
    return "incomplete"
