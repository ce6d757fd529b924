"""Where work runs and how it reports: executors (in process, a process pool, dask.distributed)
and progress.

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
from ._progress import Progress

__all__ = [
    "DaskExecutor",
    "Executor",
    "InProcessExecutor",
    "ProcessExecutor",
    "Progress",
    "fork_is_safe",
    "make_executor",
]
