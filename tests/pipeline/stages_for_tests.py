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


class CountsUnpickling:
    """A stage that records how many copies of it its process has unpickled so far."""

    unpickled = 0  # in this process

    def __init__(self) -> None:
        self.name = "counts_unpickling"  # (a state to unpickle: pickle skips an empty one)

    def __setstate__(self, state: dict) -> None:
        type(self).unpickled += 1
        self.__dict__.update(state)

    def __call__(self, instance: Instance) -> Instance:
        instance.counts["copies"] = type(self).unpickled
        instance.counts["pid"] = os.getpid()
        return instance
