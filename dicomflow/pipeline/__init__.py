"""Pipelines: a source (a :class:`~dicomflow.Reader`), a chain of stages, sinks; every input
accounted for in a manifest; and the stage runtime every source uses.

The contracts are :class:`Stage` and :class:`Sink` (Protocols in ``_instance.py``); executors
come from :mod:`dicomflow.runtime`. A source of instances that is not a catalog (a listener, a
queue, a web hook) runs a chain of stages the way the pipeline does with :func:`run_stages`,
and gets the same outcomes, stage names and reasons:

>>> from dicomflow.pipeline import Instance, run_stages
>>> outcome = run_stages([stage_a, stage_b], Instance("in.dcm"))  # doctest: +SKIP
>>> outcome.status, outcome.stage, outcome.reason                 # doctest: +SKIP
('failed', 'stage_b', 'ValueError: no Modality')
"""

from __future__ import annotations

import importlib
from typing import Any

from ._instance import Instance, Output, RunContext, Sink, Skip, Stage, read_bytes
from ._manifest import OUTPUT_TYPE, read_manifests
from ._pipeline import Pipeline, RunReport, pipeline
from ._registry import build_reader, build_sink, build_stage, known
from ._runtime import Outcome, run_stages, stage_name
from ._stages import Filter, Map, filter, map

#: Transcode loads the codec layer: imported on first use.
_LAZY = ("TARGETS", "Transcode", "TranscodeError", "encoders", "transcode_dataset")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("dicomflow.pipeline._transcode"), name)
    raise AttributeError(f"module 'dicomflow.pipeline' has no attribute {name!r}")


__all__ = [
    "OUTPUT_TYPE",
    "TARGETS",
    "Filter",
    "Instance",
    "Map",
    "Outcome",
    "Output",
    "Pipeline",
    "RunContext",
    "RunReport",
    "Sink",
    "Skip",
    "Stage",
    "Transcode",
    "TranscodeError",
    "build_reader",
    "build_sink",
    "build_stage",
    "encoders",
    "filter",
    "known",
    "map",
    "pipeline",
    "read_bytes",
    "read_manifests",
    "run_stages",
    "stage_name",
    "transcode_dataset",
]
