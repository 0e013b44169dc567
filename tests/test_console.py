"""Progress a log can read: a plain line per finished job off a terminal, nothing extra on one."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from traitmap.console import duration, log_lines


def test_one_line_per_finished_job_with_time_left_off_a_terminal():
    out = io.StringIO()
    console = Console(file=out, width=200)
    jobs = [("imdb", 0), ("gsm8k", 0), ("goat", 0)]
    seen = list(log_lines(jobs, console, "adapters", lambda job: f"{job[0]} (seed {job[1]})"))
    lines = out.getvalue().splitlines()
    assert seen == jobs and len(lines) == 3
    assert "[1/3 adapters] imdb (seed 0) done in 0s; elapsed 0s, about 0s left" in lines[0]
    assert "[3/3 adapters] goat (seed 0)" in lines[2] and lines[2].endswith("all done")


def test_a_job_that_fails_prints_no_done_line():
    out = io.StringIO()
    with pytest.raises(RuntimeError):
        for job in log_lines(["a", "b"], Console(file=out), "cells"):
            if job == "b":
                raise RuntimeError("boom")
    assert out.getvalue().count("done in") == 1


def test_a_terminal_gets_nothing_extra():
    out = io.StringIO()
    assert list(log_lines([1, 2], Console(file=out, force_terminal=True), "cells")) == [1, 2]
    assert out.getvalue() == ""


def test_durations():
    assert [duration(s) for s in (4, 65, 7322, 180_000)] == ["4s", "1m05s", "2h02m", "50h00m"]


def test_durations_in_prose_and_in_days():
    assert [duration(s, prose=True) for s in (4, 65.4, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]
    assert [duration(s, days=True) for s in (7322, 172_799, 180_000)] == ["2h02m", "47h59m", "2.1 days"]
    assert duration(None, days=True) == duration(float("nan")) == "?"
