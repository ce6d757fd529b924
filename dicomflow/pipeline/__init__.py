"""Pipelines: a source (a :class:`~dicomflow.Reader`), a chain of stages, sinks; every input
accounted for in a manifest. The contracts are :class:`Stage` and :class:`Sink` (Protocols in
``instance.py``); executors come from :mod:`dicomflow.runtime`.
"""

from __future__ import annotations

from .instance import Instance, Output, RunContext, Sink, Skip, Stage
from .pipeline import Pipeline, RunReport, pipeline
from .stages import Filter, Map, filter, map

__all__ = [
    "Filter",
    "Instance",
    "Map",
    "Output",
    "Pipeline",
    "RunContext",
    "RunReport",
    "Sink",
    "Skip",
    "Stage",
    "filter",
    "map",
    "pipeline",
]
