"""Durations as logs, tables and sentences show them."""

from traitmap.durations import duration


def test_durations():
    assert [duration(s) for s in (4, 65, 7322, 180_000)] == ["4s", "1m05s", "2h02m", "50h00m"]


def test_durations_in_prose_and_in_days():
    assert [duration(s, prose=True) for s in (4, 65.4, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]
    assert [duration(s, days=True) for s in (7322, 172_799, 180_000)] == ["2h02m", "47h59m", "2.1 days"]
    assert duration(None, days=True) == duration(float("nan")) == "?"
