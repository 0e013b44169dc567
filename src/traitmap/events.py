"""What a run reports as it goes. The driver (`run.run_study`) calls these and draws
nothing; a caller that wants to show progress passes its own (the CLI's Rich view is
`console.RunView`). These defaults show nothing: a library call or a test stays quiet."""

from __future__ import annotations


class RunEvents:
    def training(self, jobs: list) -> None:
        """Training of these `TrainJob`s begins."""

    def step(self, job, step: int, steps: int, loss: float) -> None:
        """`job` finished training step `step` of at most `steps`."""

    def trained(self, job, log: dict) -> None:
        """`job`'s adapter is saved and recorded; `log` is its training summary."""

    def evaluating(self, jobs: list, cells: int) -> None:
        """Evaluation of these `EvalJob`s begins: `cells` cells in all."""

    def answered(self, job, n: int) -> None:
        """`n` more requests of `job` are answered."""

    def scored(self, cell, metric: str, score: float) -> None:
        """A cell (model, seed, task, seconds) is committed with its score in `metric`."""

    def done(self) -> None:
        """The training or evaluation that began has ended, finished or not."""

    def note(self, text: str, warning: bool = False) -> None:
        """A line for the user: an analysis's outcome, a step skipped."""
