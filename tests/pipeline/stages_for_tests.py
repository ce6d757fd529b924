"""Module-level stage functions for pipeline tests (importable by worker processes)."""

from __future__ import annotations

import os
import time

from dicomflow import Instance, Skip


def stamp(instance: Instance) -> Instance:
    instance.dataset.ImageComments = "through dicomflow"
    return instance


def fail_on_mr(instance: Instance) -> Instance:
    if instance.row.get("Modality") == "MR":
        raise RuntimeError("no MR today")
    return instance


def skip_odd(instance: Instance) -> Instance:
    if (instance.row.get("InstanceNumber") or 0) % 2:
        raise Skip("odd instance number")
    return instance


def drop_all(instance: Instance) -> None:
    return None


def slow(instance: Instance) -> Instance:
    time.sleep(float(os.environ.get("DICOMFLOW_TEST_DELAY", "0.05")))
    return instance


def note_parent(instance: Instance) -> Instance:
    """Records which process started the worker (the manifest's ``counts``)."""
    instance.counts["worker_parent"] = os.getppid()
    return instance


def note_pid(instance: Instance) -> Instance:
    """Records which process ran the stage (the manifest's ``counts``)."""
    instance.counts["worker_pid"] = os.getpid()
    return instance
