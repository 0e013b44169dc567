"""Progress a log can read: one plain line per finished job (an adapter, a cell), with
the time it took, the time so far and an estimate of the time left.

Rich's bars draw nothing when the output is not a terminal (a log file, `nohup`, CI),
so there a long study looked stuck. `log_lines` wraps the runner's loop over its jobs:

    for name, seed in log_lines(todo, console, "adapters", lambda job: f"{job[0]} (seed {job[1]})"):
        ...train one adapter...

On a terminal it only yields the jobs (the bars show progress); elsewhere it prints a
line after each job's loop body has finished. It draws nothing else and runs nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TypeVar

from rich.console import Console

Job = TypeVar("Job")


def log_lines(jobs: Iterable[Job], console: Console, what: str, label: Callable[[Job], str] = str,
              total: int | None = None) -> Iterator[Job]:
    """Yield each job; off a terminal, print `[2/5 adapters] imdb (seed 0) done in 41s;
    elapsed 1m32s, about 2m18s left` once its loop body is done (not when it raised).

    `jobs` may be a stream of results arriving as work finishes (give `total` then): a
    job's time is then the time since the one before it.
    """
    if total is None:
        jobs = list(jobs)
        total = len(jobs)
    if console.is_terminal:
        yield from jobs
        return
    start = began = time.perf_counter()
    for number, job in enumerate(jobs, start=1):
        yield job
        finished = time.perf_counter()
        elapsed = finished - start
        left = elapsed / number * (total - number)
        console.print(f"{datetime.now():%H:%M:%S} [{number}/{total} {what}] {label(job)} done in "
                      f"{duration(finished - began)}; elapsed {duration(elapsed)}, "
                      + (f"about {duration(left)} left" if number < total else "all done"),
                      markup=False, highlight=False, soft_wrap=True)
        began = finished


def duration(seconds: float | None, *, prose: bool = False, days: bool = False) -> str:
    """How long, to the second: 42s, 3m05s, 2h07m in logs and tables; 42 s, 3 min 05 s,
    2 h 07 min in a sentence (`prose`); 7.5 days from 48 hours on (`days`); "?" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = int(round(float(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if days and hours >= 48:
        return f"{hours / 24:.1f} days"
    if prose:
        return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
