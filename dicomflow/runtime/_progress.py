"""A progress display for long runs: a rich bar on a terminal, nothing elsewhere."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Counts work done; shows a live bar with rate when stderr is a terminal.

    >>> with Progress("scanning", unit="files", enabled=False) as bar:
    ...     bar.update(10)
    """

    def __init__(
        self, label: str, *, unit: str = "items", total: int | None = None, enabled: bool = True
    ):
        self.label = label
        self.unit = unit
        self.total = total
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import Progress as RichProgress

            count = MofNCompleteColumn() if self.total else TextColumn("{task.completed:,}")
            self._progress = RichProgress(
                TextColumn(f"{self.label:<10}"),
                BarColumn(),
                count,
                TextColumn(self.unit + "  {task.fields[rate]}"),
                TimeElapsedColumn(),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, rate="")
        return self

    def update(self, done: int) -> None:
        """Set the number of units done so far."""
        if self._progress is not None:
            elapsed = self._progress.tasks[0].elapsed or 0.0
            rate = f"{done / elapsed:,.0f} {self.unit}/s" if elapsed > 0 else ""
            self._progress.update(self._task, completed=done, rate=rate)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)
