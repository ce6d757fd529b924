"""The stage runtime: a chain of stages (and sinks) on one instance, ending as an outcome.

Every source of instances calls :func:`run_stages`: the pipeline for each catalog row, the lake
for each instance a Storage SCP, a C-GET, a pull or a WADO-RS retrieve receives, and any
third-party source. It is the one place where what happens to one instance becomes a value:

* a stage returning ``None`` drops the instance: ``skipped``, reason ``"dropped by <stage>"``;
* a stage raising :class:`~dicomflow.Skip`: ``skipped``, its message the reason;
* a full disk (``OSError`` with ``ENOSPC``): ``failed``, reason ``"no space left: ..."``, with
  :attr:`Outcome.disk_full` set so that a run can stop cleanly;
* any other exception: ``failed``, reason ``"<ExceptionType>: <message>"``;
* otherwise ``done``, with the outputs the sinks wrote.

``BaseException`` s that are not ``Exception`` s (``KeyboardInterrupt``, ``SystemExit``) are not
per-instance failures: they propagate.

>>> from dicomflow.pipeline import Instance, run_stages
>>> run_stages([lambda inst: None], Instance("a.dcm")).reason
'dropped by <lambda>'
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ._instance import Instance, Output, Skip

__all__ = ["Outcome", "run_stages", "stage_name"]

DONE = "done"
SKIPPED = "skipped"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one instance.

    ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``; ``stage`` names the stage or sink
    that decided (None when done) and ``reason`` says why. ``instance`` is the instance as the
    last stage left it (None when a stage dropped it). ``outputs`` are what sinks wrote, also
    those written before a later sink failed. ``exception`` is the type name of the exception
    that decided, if one did (``"Skip"`` for a :class:`Skip`); ``seconds`` the time taken.
    """

    status: str
    instance: Instance | None
    stage: str | None = None
    reason: str | None = None
    outputs: tuple[Output, ...] = ()
    exception: str | None = None
    disk_full: bool = False
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.status == DONE

    @property
    def dropped(self) -> bool:
        """Skipped because a stage returned None (not by raising :class:`Skip`)."""
        return self.status == SKIPPED and self.exception is None


def stage_name(stage: Any) -> str:
    """How a stage or sink is named in manifests and reasons: its ``name``, else its
    ``__name__``, else its type's name."""
    name = getattr(stage, "name", None) or getattr(stage, "__name__", None)
    return str(name or type(stage).__name__)


def run_stages(stages: Iterable[Any], instance: Instance, *, sinks: Iterable[Any] = ()) -> Outcome:
    """Run ``stages`` in order on ``instance``, then write what survives to ``sinks``.

    Stages are callables ``Instance -> Instance | None``; sinks have ``name`` and
    ``write(instance) -> list[Output]``. Never raises for a failure of this instance: the
    outcome says what happened (see the module docstring).
    """
    start = time.perf_counter()
    current: Instance | None = instance
    name = "read"
    outputs: list[Output] = []
    try:
        for stage in stages:
            name = stage_name(stage)
            current = stage(current)
            if current is None:
                return Outcome(
                    SKIPPED, None, name, f"dropped by {name}",
                    seconds=time.perf_counter() - start,
                )  # fmt: skip
        for sink in sinks:
            name = sink.name
            outputs.extend(sink.write(current))
    except Skip as exc:
        return _ended(SKIPPED, current, name, str(exc), outputs, exc, start)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return _ended(FAILED, current, name, f"no space left: {exc}", outputs, exc, start)
        return _ended(FAILED, current, name, f"{type(exc).__name__}: {exc}", outputs, exc, start)
    except Exception as exc:  # noqa: BLE001 - any failure of one instance is its outcome
        return _ended(FAILED, current, name, f"{type(exc).__name__}: {exc}", outputs, exc, start)
    return Outcome(DONE, current, outputs=tuple(outputs), seconds=time.perf_counter() - start)


def _ended(
    status: str,
    instance: Instance | None,
    stage: str,
    reason: str,
    outputs: list[Output],
    exc: BaseException,
    start: float,
) -> Outcome:
    disk_full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    return Outcome(
        status, instance, stage, reason, tuple(outputs), type(exc).__name__, disk_full,
        time.perf_counter() - start,
    )  # fmt: skip
