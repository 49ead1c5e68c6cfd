"""Progress bars on stderr for long work (search, bench), shared by the CLI and the Python API."""

from __future__ import annotations

from typing import Any


def search_bars() -> Any:
    """A rich progress display on stderr implementing search.SearchProgress: one bar per phase
    with models done/total, models per second and the time left."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class ModelsPerSecond(ProgressColumn):
        def render(self, task: Any) -> Text:
            # Once a phase is done: its average over the whole phase. rich's own estimate averages
            # recent updates only, and stacks finish in bursts (64 models in two updates read as
            # 964 models/s where the phase ran at 17.5).
            # Models reused from an earlier run are done but took no time: left out of the rate.
            trained = task.completed - task.fields.get("reused", 0)
            if task.finished:  # finished_time: the seconds the phase took (elapsed keeps running)
                speed = trained / task.finished_time if task.finished_time and trained > 0 else None
            else:
                speed = task.speed
            return Text("-- models/s" if speed is None else f"{speed:.1f} models/s")

    class Bars:
        def __init__(self) -> None:
            self.progress = Progress(
                TextColumn("{task.description:<7}"), BarColumn(), MofNCompleteColumn(), ModelsPerSecond(),
                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                console=Console(stderr=True), transient=False,
            )
            self.task: Any = None
            self.total = 0
            self.started = False

        def __enter__(self) -> Bars:
            # started with the first phase: an error before it (bad data) stays one line on stderr
            self.started = False
            return self

        def __exit__(self, *exc: Any) -> None:
            if self.started:
                self.progress.stop()

        def phase_started(self, phase: str, *, total: int, done: int) -> None:
            if not self.started:
                self.progress.start()
                self.started = True
            self.total = max(total, 0)
            self.task = self.progress.add_task(phase, total=self.total, completed=done, reused=done)

        def advance(self, n: int) -> None:
            if self.task is not None:
                self.progress.advance(self.task, n)

        def extend(self, n: int) -> None:
            if self.task is not None:
                self.total += n
                self.progress.update(self.task, total=self.total)

        def reused(self, n: int) -> None:
            if self.task is not None:
                task = next(t for t in self.progress.tasks if t.id == self.task)
                self.progress.update(self.task, advance=n, reused=task.fields.get("reused", 0) + n)

        def phase_finished(self, phase: str) -> None:
            self.task = None

    return Bars()
