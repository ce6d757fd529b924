"""Pipelines: a source (a :class:`~dicomflow.Reader`), a chain of stages, sinks; every input
accounted for in a manifest; and the stage runtime every source uses.

The contracts are :class:`Stage` and :class:`Sink` (Protocols in ``instance.py``); executors
come from :mod:`dicomflow.runtime`. A source of instances that is not a catalog (a listener, a
queue, a web hook) runs a chain of stages the way the pipeline does with :func:`run_stages`,
and gets the same outcomes, stage names and reasons:

>>> from dicomflow.pipeline import Instance, run_stages
>>> outcome = run_stages([stage_a, stage_b], Instance("in.dcm"))  # doctest: +SKIP
>>> outcome.status, outcome.stage, outcome.reason                 # doctest: +SKIP
('failed', 'stage_b', 'ValueError: no Modality')
"""

from __future__ import annotations

from ._runtime import Outcome, run_stages, stage_name
from .instance import Instance, Output, RunContext, Sink, Skip, Stage
from .pipeline import Pipeline, RunReport, pipeline
from .stages import Filter, Map, filter, map

__all__ = [
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
    "filter",
    "map",
    "pipeline",
    "run_stages",
    "stage_name",
]
