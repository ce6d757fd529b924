"""Sources to catalogs: the scan of Part 10 objects anywhere fsspec reaches, DICOMDIR media sets,
and catalogs written to Parquet.

A catalog is an Arrow table with one row per instance, typed from the data dictionary (see
:mod:`dicomflow.dicom`). This layer reads; it knows nothing of pixels, stages or sinks.
"""

from ._catalog import Catalog, ScanEvent, ScanOptions, ScanStats, scan, scan_batch, unify
from ._mediaset import DIR_KEYS, read_mediaset
from ._parquet import write_catalog, write_dataset
from ._reader import Reader
from ._sources import iter_sources, read_headers
from ._summary import error_kind, errors_by_reason, modality_counts, totals
from ._tables import FORMATS, TableWriter, batch_id, read_table, rows_batch_id

__all__ = [
    "DIR_KEYS",
    "FORMATS",
    "Catalog",
    "Reader",
    "TableWriter",
    "batch_id",
    "ScanEvent",
    "ScanOptions",
    "ScanStats",
    "error_kind",
    "errors_by_reason",
    "iter_sources",
    "read_headers",
    "modality_counts",
    "read_mediaset",
    "read_table",
    "rows_batch_id",
    "scan",
    "scan_batch",
    "totals",
    "unify",
    "write_catalog",
    "write_dataset",
]
