"""Progress display for the CLI's long commands (the library reports through callbacks).

On a terminal: rich's live bar. Elsewhere (a log file, CI): the same columns, less the
bar, as one plain line every few seconds and at each phase change, so that a log shows
where the work is. `quiet`: nothing.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TimeRemainingColumn,
)
from rich.text import Text

LOG_EVERY_SECONDS = 5.0


class SpeedColumn(ProgressColumn):
    """rich's own speed estimate (`Task.speed`), in the command's unit; blank until known."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.2f} {self.unit}/s", style="progress.data.speed")


class CountColumn(MofNCompleteColumn):
    """done/total, blank while the phase has no total (no "0/?" while encoders load)."""

    def render(self, task: Task) -> Text:
        return Text("") if task.total is None else super().render(task)


class EtaColumn(TimeRemainingColumn):
    """rich's time remaining, labelled, blank while the phase has no total."""

    def render(self, task: Task) -> Text:
        return Text("") if task.total is None else Text("ETA ") + super().render(task)

    def __call__(self, task: Task) -> Text:
        # Not rich's 0.5 s cache of this column, which would carry an ETA into the next phase.
        return self.render(task)


class PhaseProgress(Progress):
    """A rich Progress whose task description is the phase ("loading encoders …"), that
    logs plain lines on a non-terminal and shows nothing when quiet."""

    def __init__(self, *columns: str | ProgressColumn, console: Console, quiet: bool = False,
                 every: float = LOG_EVERY_SECONDS) -> None:
        super().__init__(*columns, console=console, disable=quiet or not console.is_terminal)
        self._log = not quiet and not console.is_terminal
        self._every = every
        self._logged_at = -float("inf")
        self._unlogged = False  # an update since the last line

    def update(self, task_id: TaskID, **changes: Any) -> None:
        super().update(task_id, **changes)
        self._unlogged = True
        if self._log and time.monotonic() - self._logged_at >= self._every:
            self.log_line(task_id)

    def phase(self, task_id: TaskID, description: str, total: int | None = None, completed: int = 0,
              **fields: Any) -> None:
        """Start a phase: its name, a fresh clock and speed, where it stands (`completed`,
        `fields`) and its total (None: unknown, which blanks the count and the ETA; rich's
        own `update` cannot unset a total). A log first gets the last state of the phase
        that ends, whatever the interval."""
        if self._log and self._unlogged:
            self.log_line(task_id)
        self.reset(task_id, description=description, completed=completed, **fields)
        with self._lock:
            self._tasks[task_id].total = total
        if self._log:
            self.log_line(task_id)

    def log_line(self, task_id: TaskID) -> None:
        """The task's columns as one plain line (bars and spinners left out)."""
        task = self._tasks[task_id]
        parts: list[Text] = []
        for column in self.columns:
            if isinstance(column, (BarColumn, SpinnerColumn)):
                continue
            cell = Text(column.format(task=task)) if isinstance(column, str) else column(task)
            if isinstance(cell, Text) and cell.plain.strip():
                parts.append(cell)
        self.console.print(Text("  ").join(parts), highlight=False, soft_wrap=True)
        self._logged_at = time.monotonic()
        self._unlogged = False

    def start(self) -> None:
        super().start()
        if self._log:  # the first phase, before anything has moved
            for task_id in self._tasks:
                self.log_line(task_id)

    def stop(self) -> None:
        if self._log and self._unlogged:  # the last state, whatever the interval
            for task_id in self._tasks:
                self.log_line(task_id)
        super().stop()
