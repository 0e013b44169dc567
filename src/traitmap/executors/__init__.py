"""Executors schedule a study's jobs: `local` runs them in this process, `ray` on a cluster.

An executor takes jobs (traitmap.jobs) and yields their results as they finish; it
never writes the output directory. Adding one is a class that satisfies `Executor`,
named in EXECUTORS or, from a separately installed package, in its `traitmap.executors`
entry points (traitmap.plugins); the study logic, the store, the analyses and the
report do not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from traitmap.plugins import Registry

if TYPE_CHECKING:
    from traitmap.jobs import CellResult, EvalJob, TrainedAdapter, TrainJob

EXECUTORS = Registry("executor", "traitmap.executors", {"local": "traitmap.executors.local:LocalExecutor",
                                                        "ray": "traitmap.executors.ray:RayExecutor"},
                     field="executor", extras={"ray": "traitmap[ray]"})


@runtime_checkable
class Executor(Protocol):
    """What the driver asks of an executor. Results come back in any order, each as soon
    as it is done; progress callbacks run on the driver."""

    def train(self, jobs: Sequence[TrainJob], progress: Callable[[TrainJob, int, int, float], None] | None = None
              ) -> Iterator[tuple[TrainJob, TrainedAdapter]]:
        """Each job with its trained adapter; progress(job, step, steps, loss)."""

    def evaluate(self, jobs: Sequence[EvalJob], progress: Callable[[EvalJob, int], None] | None = None
                 ) -> Iterator[CellResult]:
        """Every job's cells, each when it is whole; progress(job, requests just answered)."""

    def close(self) -> None:
        """Release what the executor holds (loaded models, a cluster it started)."""


def names() -> list[str]:
    return EXECUTORS.names()


def get(name: str, **options) -> Executor:
    """A ready executor by name; `options` go to its constructor (e.g. a Ray address)."""
    return EXECUTORS.load(name)(**options)
