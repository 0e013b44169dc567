"""How a run looks in a terminal and in a log: the Rich view of the events a run emits
(`run.RunEvents`).

Bars need a terminal: in a log file (`nohup`, CI) they are off, and `LogLines` prints one
plain line per finished job (an adapter, a cell) with the time it took, the time so far
and an estimate of the time left, so that a long study does not look stuck there.
"""

from __future__ import annotations

import time
from datetime import datetime

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from traitmap.durations import duration
from traitmap.events import RunEvents


class LogLines:
    """Off a terminal, `done(label, outcome)` prints `[2/5 adapters] imdb (seed 0) done in 41s,
    loss 0.335 (bf16); elapsed 1m32s, about 2m18s left`: a job's time is the time since the one
    before it (jobs may run side by side and come back in any order). On a terminal it prints
    nothing."""

    def __init__(self, console: Console, what: str, total: int):
        self.console, self.what, self.total = console, what, total
        self.number = 0
        self.start = self.began = time.perf_counter()

    def done(self, label: str, outcome: str = "") -> None:
        if self.console.is_terminal:
            return
        self.number += 1
        finished = time.perf_counter()
        elapsed = finished - self.start
        left = elapsed / self.number * (self.total - self.number)
        outcome = f", {outcome}" if outcome else ""
        self.console.print(f"{datetime.now():%H:%M:%S} [{self.number}/{self.total} {self.what}] {label} done in "
                           f"{duration(finished - self.began)}{outcome}; elapsed {duration(elapsed)}, "
                           + (f"about {duration(left)} left" if self.number < self.total else "all done"),
                           markup=False, highlight=False, soft_wrap=True)
        self.began = finished


class RunView(RunEvents):
    """A run drawn with Rich: a bar per adapter or target on a terminal, plain lines in a log
    (where Rich would draw the bars once, cut to 80 columns, when a step ends)."""

    def __init__(self, console: Console):
        self.console = console
        self.bar: Progress | None = None
        self.bars: dict = {}
        self.lines: LogLines | None = None

    def _open(self) -> Progress:
        self.bar = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False,
            disable=not self.console.is_terminal,
        )
        self.bar.start()
        return self.bar

    def training(self, jobs) -> None:
        bar = self._open()
        self.bars = {(job.name, job.seed): bar.add_task(f"train {job.name} (seed {job.seed})",
                                                        total=job.train.total_steps(len(job.examples)), info="")
                     for job in jobs}
        self.lines = LogLines(self.console, "adapters", len(jobs))

    def step(self, job, step: int, steps: int, loss: float) -> None:
        self.bar.update(self.bars[(job.name, job.seed)], completed=step, info=f"loss {loss:.3f}")

    def trained(self, job, log: dict) -> None:
        self.bar.update(self.bars[(job.name, job.seed)], completed=log["steps"],
                        info=f"loss {log['final_loss']:.3f} ({log['precision']})")
        self.lines.done(f"{job.name} (seed {job.seed})", f"loss {log['final_loss']:.3f} ({log['precision']})")

    def evaluating(self, jobs, cells: int) -> None:
        bar = self._open()
        self.bars = {"cells": bar.add_task("evaluate (cells)", total=cells, info="")}
        self.bars.update({job.task.name: bar.add_task(f"  {job.task.name} ({len(job.cells)} models)",
                                                      total=job.request_count, info="") for job in jobs})
        self.lines = LogLines(self.console, "cells", cells)

    def answered(self, job, n: int) -> None:
        self.bar.advance(self.bars[job.task.name], n)

    def scored(self, cell, metric: str, score: float) -> None:
        self.bar.advance(self.bars["cells"])
        self.console.print(f"  {cell.model:<28} {cell.task:<22} {metric} {score:.3f}  ({cell.seconds:.0f} s)")
        self.lines.done(f"{cell.model} on {cell.task}")

    def done(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.bar, self.bars, self.lines = None, {}, None

    def note(self, text: str, warning: bool = False) -> None:
        self.console.print(text, style="yellow" if warning else "dim", markup=False, highlight=False)
