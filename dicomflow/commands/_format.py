"""``--format table|csv|json`` for the commands that print tables (``info``, ``find``).

``table`` is for people: every value whole on one line (a UID is never cut or wrapped over
several lines; a wide table is wider than the terminal instead). ``csv`` and ``json`` are for
programs, on stdout alone (counts and messages go to stderr).
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = ["FORMATS", "add_format", "print_records", "print_table", "to_json"]

FORMATS = ("table", "csv", "json")
#: Longest text shown whole in a table cell; longer values (rare: a comment) end in ``…``.
CELL_CHARS = 200


def add_format(parser: Any, help: str) -> None:
    """Add ``--format`` (default ``table``) to a subcommand's parser."""
    parser.add_argument("--format", choices=FORMATS, default="table", help=help)


def print_table(frame: Any, *, rows: int = 50) -> None:
    """A polars DataFrame for people: values whole, one line per row, at most ``rows`` rows."""
    import polars as pl

    with pl.Config(
        tbl_rows=rows, tbl_cols=-1, fmt_str_lengths=CELL_CHARS, tbl_width_chars=-1,
        tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True,
    ):  # fmt: skip
        print(frame)


def to_json(value: Any) -> Any:
    """A DataFrame as a list of records; anything else as it is."""
    import polars as pl

    if isinstance(value, pl.DataFrame):
        return json.loads(value.write_json())
    return value


def print_records(frame: Any, fmt: str) -> None:
    """One table in ``fmt``: ``table``, ``csv`` (with a header) or ``json`` (a list of records)."""
    if fmt == "csv":
        sys.stdout.write(_flat(frame).write_csv())
    elif fmt == "json":
        print(json.dumps(to_json(frame), indent=2, default=str))
    else:
        print_table(frame)


def _flat(frame: Any) -> Any:
    """Lists (multi-valued attributes) joined by a backslash, as DICOM writes them: CSV has no
    nested values."""
    import polars as pl

    lists = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.List)]
    return frame.with_columns(
        pl.col(name).cast(pl.List(pl.String)).list.join("\\") for name in lists
    )
