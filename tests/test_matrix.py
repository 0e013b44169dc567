"""The transfer matrix: plan order, seeds averaged, missing cells NaN; gains subtract the base row."""

import math

import pandas as pd

from traitmap.matrix import gains, transfer_matrix


def cells(rows):
    return pd.DataFrame(rows, columns=["model", "seed", "task", "score"])


CELLS = cells([
    ("fk", 0, "imdb", 0.6), ("fk", 1, "imdb", 0.8), ("fk", 0, "goat", 0.1),
    ("base", -1, "goat", 0.2), ("base", -1, "imdb", 0.5), ("gsm", 0, "goat", 0.4),
])


def test_rows_and_columns_follow_the_plan_not_the_cells():
    m = transfer_matrix(CELLS, ["base", "fk", "gsm"], ["imdb", "goat"])
    assert list(m.index) == ["base", "fk", "gsm"] and m.index.name == "model"
    assert list(m.columns) == ["imdb", "goat"]


def test_seeds_are_averaged():
    m = transfer_matrix(CELLS, ["base", "fk", "gsm"], ["imdb", "goat"])
    assert math.isclose(m.loc["fk", "imdb"], 0.7)
    assert m.loc["base", "goat"] == 0.2


def test_a_missing_cell_is_nan_not_zero():
    m = transfer_matrix(CELLS, ["base", "fk", "gsm", "new"], ["imdb", "goat", "mnli"])
    assert math.isnan(m.loc["gsm", "imdb"])
    assert m.loc["new"].isna().all() and m["mnli"].isna().all()


def test_no_cells_gives_an_all_nan_matrix():
    m = transfer_matrix(cells([]), ["base", "fk"], ["imdb"])
    assert m.shape == (2, 1) and m.isna().all().all()


def test_gains_subtract_the_base_row_and_drop_it():
    g = gains(transfer_matrix(CELLS, ["base", "fk", "gsm"], ["imdb", "goat"]))
    assert list(g.index) == ["fk", "gsm"]
    assert math.isclose(g.loc["fk", "imdb"], 0.2) and math.isclose(g.loc["fk", "goat"], -0.1)
    assert math.isclose(g.loc["gsm", "goat"], 0.2) and math.isnan(g.loc["gsm", "imdb"])
