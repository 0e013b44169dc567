"""The transfer matrix M[model, task] and the gains over the base model (docs/paper.md, step 1)."""

from __future__ import annotations

import pandas as pd


def transfer_matrix(cells: pd.DataFrame, models: list[str], targets: list[str]) -> pd.DataFrame:
    """Scores averaged over seeds; rows in plan order (base first), columns in target order.

    A cell that has not been evaluated is NaN, never zero.
    """
    if cells.empty:
        return pd.DataFrame(index=pd.Index(models, name="model"), columns=targets, dtype=float)
    mean = cells.groupby(["model", "task"])["score"].mean().unstack("task")
    matrix = mean.reindex(index=models, columns=targets).astype(float)
    matrix.index.name = "model"
    matrix.columns.name = None
    return matrix


def gains(matrix: pd.DataFrame, base: str = "base") -> pd.DataFrame:
    """Each adapter's score minus the base model's, per task (the transfer effect)."""
    return matrix.drop(index=base).sub(matrix.loc[base], axis=1)
