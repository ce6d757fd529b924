"""Catalog-like inputs as plain row dicts (the pixel layer's only view of the catalog)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from os import PathLike
from typing import Any

import pyarrow as pa

from ..errors import ConfigError

__all__ = ["as_arrow", "as_rows"]


def as_arrow(catalog: Any) -> pa.Table:
    """Turn a catalog-like object into an Arrow table.

    Accepts a ``pyarrow.Table`` or ``RecordBatch``, a polars ``DataFrame``/``LazyFrame``, a pandas
    ``DataFrame``, anything with ``to_arrow()`` (a dicomflow catalog), one row as a mapping, a list
    of row mappings, or paths/URLs (scanned with ``dicomflow.scan``).
    """
    if isinstance(catalog, pa.Table):
        return catalog
    if isinstance(catalog, pa.RecordBatch):
        return pa.Table.from_batches([catalog])
    if isinstance(catalog, Mapping):
        return pa.Table.from_pylist([dict(catalog)])
    module = type(catalog).__module__
    if module.startswith("polars"):
        if hasattr(catalog, "collect"):
            catalog = catalog.collect()
        return catalog.to_arrow()
    if module.startswith("pandas"):
        return _catalog_types(pa.Table.from_pandas(catalog, preserve_index=False))
    if hasattr(catalog, "to_arrow"):
        return catalog.to_arrow()
    if isinstance(catalog, str | PathLike):
        catalog = [catalog]
    if isinstance(catalog, Iterable):
        items = list(catalog)
        if all(isinstance(i, Mapping) for i in items):
            return pa.Table.from_pylist([dict(i) for i in items])
        if all(isinstance(i, str | PathLike) for i in items):
            try:
                from ..catalog import scan
            except ImportError as exc:
                raise ConfigError(
                    "paths need dicomflow.scan to build a catalog; pass a catalog instead"
                ) from exc
            return as_arrow(scan([str(i) for i in items]))
    raise ConfigError(f"cannot read a catalog from {type(catalog).__name__}")


def _catalog_types(table: pa.Table) -> pa.Table:
    """Integer columns back from pandas' floats.

    pandas holds an integer column with a missing value as float64 (``NaN`` for null): a
    catalog's ``pixel_offset`` comes back as ``1234.0``. Columns the catalog types as integers
    (the fixed ones and every attribute column) are cast back; nulls stay nulls.
    """
    from ..dicom import FIXED_SCHEMA, resolve_columns

    expected = {f.name: f.type for f in FIXED_SCHEMA}
    for name in table.column_names:
        if name in expected or not table.schema.field(name).type.equals(pa.float64()):
            continue
        try:
            specs = resolve_columns([name])
        except Exception:  # noqa: BLE001 - not an attribute: left as it is
            continue
        if specs and specs[0].name == name:
            expected[name] = specs[0].arrow_type
    for i, name in enumerate(table.column_names):
        want = expected.get(name)
        have = table.schema.field(name).type
        if want is not None and pa.types.is_integer(want) and pa.types.is_floating(have):
            table = table.set_column(i, name, table.column(name).cast(want))
    return table


def as_rows(catalog: Any) -> list[dict[str, Any]]:
    """Rows of a catalog-like object as dicts (see :func:`as_arrow`)."""
    return as_arrow(catalog).to_pylist()
