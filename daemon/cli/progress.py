"""Progress bars for the long commands (replay, audit, verify, export, import, bench).

On a terminal, a command shows a bar per phase of its work on stderr, with the
rate and an ETA (rich's :class:`~rich.progress.Progress`). With ``--json``, or
when stdout or stderr is not a terminal, it shows nothing at all: :meth:`Bars.task`
then returns None, which the library functions take as "no progress wanted",
so a piped or scripted run costs nothing and prints the same bytes as before.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING

from eventstore import EventStore, RecordedEvent
from eventstore.progress import OnProgress

if TYPE_CHECKING:
    from rich.progress import Progress, Task, TaskID


def wanted(as_json: bool = False) -> bool:
    """Whether a command draws bars: on a terminal, and not asked for ``--json``."""
    return not as_json and sys.stdout.isatty() and sys.stderr.isatty()


def rate(task: Task) -> str:
    """Items per second: rich's recent estimate, else the average since the start."""
    speed = task.finished_speed or task.speed
    if speed is None and task.elapsed and task.completed:
        speed = task.completed / task.elapsed
    unit = task.fields.get("unit", "items")
    if speed is None:
        return f"? {unit}/s"
    return f"{speed:,.0f} {unit}/s" if speed >= 10 else f"{speed:.2g} {unit}/s"


def _progress() -> Progress:
    """rich's bars on stderr: imported only here, so a run that draws none never loads rich."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(rate(task), style="progress.data.speed")

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


class _Task:
    """One bar as an :class:`~eventstore.progress.OnProgress` callback."""

    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress, self.task = progress, task

    def __call__(self, done: int, total: int | None, /) -> None:
        # total=None leaves the bar's total as it is (known here from the log, say).
        self.progress.update(self.task, completed=done, total=total)

    def describe(self, description: str) -> None:
        self.progress.update(self.task, description=description)


class Bars:
    """The bars of one command run, on stderr; inert (no output) when not ``enabled``."""

    def __init__(self, enabled: bool) -> None:
        self.progress: Progress | None = _progress() if enabled else None

    def __enter__(self) -> Bars:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.progress is not None:
            self.progress.stop()

    def task(self, description: str, total: int | None, unit: str = "events") -> _Task | None:
        """A new bar; its callback, or None when no bar is drawn."""
        if self.progress is None:
            return None
        return _Task(self.progress, self.progress.add_task(description, total=total, unit=unit))


async def read_log(store: EventStore, bars: Bars) -> list[RecordedEvent]:
    """The whole log in memory, with a "reading" bar."""
    bar = bars.task("reading", await store.last_position() if bars.progress else None)
    events: list[RecordedEvent] = []
    async for batch in store.read_batches(1):
        events.extend(batch)
        if bar is not None:
            bar(batch[-1].position, None)
    return events


#: The bars of a run that draws none (library callers and tests).
NO_BARS = Bars(enabled=False)

__all__ = ["NO_BARS", "Bars", "OnProgress", "read_log", "wanted"]
