"""What a catalog holds, in a few small tables: counts by modality, errors by reason.

Used by ``dicomflow info``, by the catalog's notebook view and by the demo report. Every
function takes an Arrow table with the catalog's fixed columns (``uri``, ``size``, ``error``,
the UIDs) and whatever attribute columns it has, and returns polars frames.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

__all__ = ["catalog_html", "error_kind", "errors_by_reason", "modality_counts", "totals"]

#: what makes two error messages the same kind: the text up to the first detail
_DETAIL = re.compile(r"(: | \(| '| \"| at byte| \d).*$", re.S)


def error_kind(message: str) -> str:
    """The kind of an error message, without the file's own numbers and details.

    >>> error_kind("truncated: the object ends at byte 2842 inside an element")
    'truncated'
    >>> error_kind("Pixel Data truncated: 8192 bytes declared at byte 1500, the file has 8130")
    'Pixel Data truncated'
    >>> error_kind("cannot read: file not found ([Errno 2] No such file: 'a.dcm')")
    'cannot read: file not found'
    """
    head, sep, rest = message.partition("cannot read: ")
    if sep and not head:  # the reader's own prefix: the kind is what follows it
        return "cannot read: " + error_kind(rest)
    kind = _DETAIL.sub("", message).strip()
    return kind or message.split(":", 1)[0].strip() or "unknown"


def _frame(table: pa.Table) -> Any:
    import polars as pl

    return pl.from_arrow(table)


def _col(df: Any, name: str) -> Any:
    import polars as pl

    return pl.col(name) if name in df.columns else pl.lit(None, dtype=pl.Utf8)


def modality_counts(table: pa.Table) -> Any:
    """Patients, studies, series, instances, frames and bytes per modality (readable rows)."""
    import polars as pl

    df = _frame(table)
    good = df.filter(pl.col("error").is_null()) if "error" in df.columns else df
    return (
        good.group_by(_col(good, "Modality").fill_null("(none)").alias("Modality"))
        .agg(
            _col(good, "PatientID").n_unique().alias("patients"),
            pl.col("study_instance_uid").n_unique().alias("studies"),
            pl.col("series_instance_uid").n_unique().alias("series"),
            pl.len().alias("instances"),
            pl.col("number_of_frames").fill_null(0).sum().alias("frames"),
            pl.col("size").fill_null(0).sum().alias("bytes"),
        )
        .sort("instances", "Modality", descending=[True, False])
    )


def errors_by_reason(table: pa.Table, examples: int = 1) -> Any:
    """Unreadable files per kind of error, most frequent first, with an example file."""
    import polars as pl

    df = _frame(table)
    if "error" not in df.columns:
        return pl.DataFrame({"reason": [], "files": [], "example": []})
    bad = df.filter(pl.col("error").is_not_null()).select("uri", "error")
    kinds = [error_kind(e) for e in bad["error"].to_list()]
    bad = bad.with_columns(pl.Series("reason", kinds, dtype=pl.Utf8))
    return (
        bad.group_by("reason")
        .agg(pl.len().alias("files"), pl.col("uri").head(examples).alias("example"))
        .with_columns(pl.col("example").list.first())
        .sort("files", "reason", descending=[True, False])
    )


def totals(table: pa.Table) -> dict[str, int]:
    """Files, readable instances, errors, patients, studies, series and bytes in all."""
    import polars as pl

    df = _frame(table)
    good = df.filter(pl.col("error").is_null()) if "error" in df.columns else df
    return {
        "files": df.height,
        "instances": good.height,
        "errors": df.height - good.height,
        "patients": good.select(_col(good, "PatientID").n_unique()).item() if good.height else 0,
        "studies": good["study_instance_uid"].n_unique() if good.height else 0,
        "series": good["series_instance_uid"].n_unique() if good.height else 0,
        "bytes": int(df["size"].fill_null(0).sum()) if df.height else 0,
    }


def catalog_html(catalog: Any, table: pa.Table | None) -> str:
    """The notebook view of a catalog: its source and, once read, counts and errors."""
    import html

    source = html.escape(repr(catalog.source))
    head = f"<b>dicomflow Catalog</b> of {source}"
    if table is None:
        return (
            f"<div>{head}<p>not read yet (a remote or large source): "
            "<code>cat.to_polars()</code> reads it, <code>dfl.scan(...).update(path)</code> "
            "keeps a catalog file up to date.</p></div>"
        )
    counts = totals(table)
    line = ", ".join(f"{v:,} {k}" for k, v in counts.items())
    parts = [f"<div>{head}<p>{html.escape(line)}</p>"]
    import polars as pl

    with pl.Config(tbl_rows=50, fmt_str_lengths=80):
        by = modality_counts(table)
        if by.height:
            parts.append("<p>by modality</p>" + by._repr_html_())
        errors = errors_by_reason(table)
        if errors.height:
            parts.append("<p>unreadable files, by kind</p>" + errors._repr_html_())
    parts.append("</div>")
    return "".join(parts)
