"""Progress a log can read: a plain line per finished job off a terminal, nothing extra on one."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

from rich.console import Console

from traitmap.console import LogLines, RunView


def test_one_line_per_finished_job_with_time_left_off_a_terminal():
    out = io.StringIO()
    lines = LogLines(Console(file=out, width=200), "adapters", 3)
    for label in ("imdb (seed 0)", "gsm8k (seed 0)", "goat (seed 0)"):
        lines.done(label)
    printed = out.getvalue().splitlines()
    assert len(printed) == 3
    assert "[1/3 adapters] imdb (seed 0) done in 0s; elapsed 0s, about 0s left" in printed[0]
    assert "[3/3 adapters] goat (seed 0)" in printed[2] and printed[2].endswith("all done")


def test_a_terminal_gets_no_lines():
    out = io.StringIO()
    LogLines(Console(file=out, force_terminal=True), "cells", 2).done("a")
    assert out.getvalue() == ""


def _job(name: str):
    return SimpleNamespace(name=name, seed=0, examples=[1] * 8, train=SimpleNamespace(total_steps=lambda n: n // 4))


def test_a_run_view_in_a_log_prints_what_finished_and_nothing_for_a_job_that_failed():
    out = io.StringIO()
    view = RunView(Console(file=out, width=200))
    jobs = [_job("imdb"), _job("goat")]
    view.training(jobs)
    view.step(jobs[0], 1, 2, 0.5)
    view.trained(jobs[0], {"steps": 2, "final_loss": 0.4, "precision": "fp32"})
    view.done()  # goat failed: no line for it
    cell = SimpleNamespace(model="imdb", seed=0, task="flipkart", seconds=3.0)
    view.evaluating([SimpleNamespace(task=SimpleNamespace(name="flipkart"), cells=[cell], request_count=5)], 1)
    view.answered(SimpleNamespace(task=SimpleNamespace(name="flipkart")), 5)
    view.scored(cell, "accuracy", 0.75)
    view.done()
    view.note("PCA skipped: too few sources", warning=True)
    text = out.getvalue()
    assert text.count("done in") == 2 and "goat (seed 0) done" not in text
    assert re.search(r"\[1/2 adapters\] imdb \(seed 0\) done in \d+s, loss 0.400 \(fp32\); elapsed", text)
    assert "━" not in text  # no bars in a log
    assert "imdb                         flipkart               accuracy 0.750  (3 s)" in text
    assert "[1/1 cells] imdb on flipkart done in" in text and "PCA skipped: too few sources" in text


def test_a_run_view_on_a_terminal_draws_bars_and_no_lines():
    out = io.StringIO()
    view = RunView(Console(file=out, force_terminal=True, width=120))
    job = _job("imdb")
    view.training([job])
    view.trained(job, {"steps": 2, "final_loss": 0.4, "precision": "fp32"})
    view.done()
    text = out.getvalue()
    assert "━" in text and "train imdb (seed 0)" in text and "loss 0.400 (fp32)" in text and "done in" not in text
