"""Pipelines: stages on instances, sinks, manifests; and the stage runtime every source uses.

A source of instances that is not a catalog (a listener, a queue, a web hook) runs a chain of
stages the way the pipeline does with :func:`run_stages`, and gets the same outcomes, stage
names and reasons:

>>> from dicomflow.pipeline import Instance, run_stages
>>> outcome = run_stages([stage_a, stage_b], Instance("in.dcm"))  # doctest: +SKIP
>>> outcome.status, outcome.stage, outcome.reason                 # doctest: +SKIP
('failed', 'stage_b', 'ValueError: no Modality')
"""

from ._runtime import Outcome, run_stages, stage_name
from .instance import Instance, Output, RunContext, Sink, Skip, Stage

__all__ = [
    "Instance",
    "Outcome",
    "Output",
    "RunContext",
    "Sink",
    "Skip",
    "Stage",
    "run_stages",
    "stage_name",
]
