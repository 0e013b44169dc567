"""Durations written for people, in one style wherever a time is shown: the progress
lines, `status`, the estimate and the report."""

from __future__ import annotations

import math


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
