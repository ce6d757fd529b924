"""Where work runs and how it reports: executors (in process, a process pool, dask.distributed)
and progress (one event type, :class:`ProgressEvent`, and the consumers that show it).

This layer knows nothing about DICOM: it sits beside :mod:`dicomflow.dicom` at the bottom, and
the catalog, the pipeline and the network use it, so a scan and a pipeline share the same
mechanisms. Stage and reader code never imports an executor: they only write functions.
"""

from ._executors import (
    DaskExecutor,
    Executor,
    InProcessExecutor,
    ProcessExecutor,
    fork_is_safe,
    make_executor,
)
from ._memory import BULK_GC_THRESHOLD, fewer_collections, peak_rss
from ._progress import (
    PROGRESS_FILE,
    Progress,
    ProgressCallback,
    ProgressConsumer,
    ProgressEvent,
    ProgressFile,
    ProgressLog,
    as_consumer,
    progress_for,
    read_progress,
)

__all__ = [
    "BULK_GC_THRESHOLD",
    "PROGRESS_FILE",
    "DaskExecutor",
    "Executor",
    "InProcessExecutor",
    "ProcessExecutor",
    "Progress",
    "ProgressCallback",
    "ProgressConsumer",
    "ProgressEvent",
    "ProgressFile",
    "ProgressLog",
    "as_consumer",
    "fewer_collections",
    "fork_is_safe",
    "make_executor",
    "peak_rss",
    "progress_for",
    "read_progress",
]
