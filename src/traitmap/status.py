"""Where a study stands: `traitmap status`. Only reads; the CLI prints what this returns."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Status:
    name: str
    base_model: str
    out_dir: Path
    adapters_done: int
    adapters_total: int
    adapters_todo: list[tuple[str, int]]
    cells_done: int
    cells_total: int
    matrix: pd.DataFrame          # scores so far; NaN = not evaluated yet
    last_run: dict | None         # started, finished (None if it never finished), seconds, command
    runs: int
    report: Path | None
    seconds_spent: float          # training + evaluation time of the finished work
    running: int | None = None    # pid of the live process writing the study (-1: unknown pid), or None

    @property
    def work_done(self) -> bool:
        """Every adapter trained and every cell evaluated."""
        return self.adapters_done == self.adapters_total and self.cells_done == self.cells_total

    @property
    def complete(self) -> bool:
        """All work done and the last run finished: a run killed during its analyses or
        report (its row has no finish time) left the study incomplete."""
        return self.work_done and self.running is None and (self.last_run is None or self.last_run["finished"] is not None)


def study_status(out_dir: str | os.PathLike) -> Status:
    from traitmap.plan import make_plan
    from traitmap.results import Study
    from traitmap.store import lock_holder

    with Study.load(out_dir) as study:
        config = study.config
        plan = make_plan(config, None)
        done_adapters = [a for a in plan.adapters if study.adapter_done(*a)]
        done_cells = study.done_cells()
        cells_done = sum(1 for c in plan.cells if c in done_cells)
        runs = study.runs
        last = None
        if not runs.empty:
            row = runs.iloc[-1]
            last = {"started": row["started"], "finished": row["finished"] if isinstance(row["finished"], str) else None,
                    "seconds": float(row["seconds"]) if pd.notna(row["seconds"]) else None, "command": row["command"]}
        report = study.out_dir / "report" / "index.html"
        return Status(
            name=config.name, base_model=config.base_model, out_dir=study.out_dir,
            adapters_done=len(done_adapters), adapters_total=len(plan.adapters),
            adapters_todo=[a for a in plan.adapters if a not in done_adapters],
            cells_done=cells_done, cells_total=len(plan.cells), matrix=study.matrix, last_run=last, runs=len(runs),
            report=report if report.is_file() else None, seconds_spent=study.work_seconds(),
            running=lock_holder(study.out_dir),
        )
