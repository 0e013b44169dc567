"""Two studies side by side: `traitmap compare`. Only reads."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from traitmap.errors import TraitmapError
from traitmap.matrix import gains


@dataclass
class Comparison:
    label_a: str
    label_b: str
    models: list[str]             # common models, base first
    targets: list[str]            # common targets
    a: pd.DataFrame               # scores of A on the common models x targets
    b: pd.DataFrame
    only_a: dict[str, list[str]]  # {"models": [...], "targets": [...]} in A only
    only_b: dict[str, list[str]]

    @property
    def diff(self) -> pd.DataFrame:
        """B minus A, score by score."""
        return self.b - self.a

    @property
    def gains_a(self) -> pd.DataFrame:
        return gains(self.a)

    @property
    def gains_b(self) -> pd.DataFrame:
        return gains(self.b)

    def summary(self) -> pd.DataFrame:
        """Per target: the mean gain of the common adapters in A and in B, and which is larger."""
        rows = []
        for t in self.targets:
            ga, gb = self.gains_a[t], self.gains_b[t]
            both = ga.notna() & gb.notna()
            ma = float(ga[both].mean()) if both.any() else float("nan")
            mb = float(gb[both].mean()) if both.any() else float("nan")
            if not both.any():
                winner = "n/a"
            elif abs(mb - ma) < 1e-9:
                winner = "tie"
            else:
                winner = self.label_b if mb > ma else self.label_a
            rows.append({"target": t, "adapters": int(both.sum()), "mean_gain_a": ma, "mean_gain_b": mb,
                         "difference": mb - ma, "gains_more": winner})
        return pd.DataFrame(rows)

    def long(self) -> pd.DataFrame:
        """One row per (model, target): both scores, their difference, both gains."""
        rows = []
        for m in self.models:
            for t in self.targets:
                a, b = self.a.loc[m, t], self.b.loc[m, t]
                ga = self.gains_a.loc[m, t] if m != "base" else float("nan")
                gb = self.gains_b.loc[m, t] if m != "base" else float("nan")
                rows.append({"model": m, "target": t, "score_a": a, "score_b": b, "diff": b - a,
                             "gain_a": ga, "gain_b": gb, "gain_diff": gb - ga})
        return pd.DataFrame(rows)


def compare_studies(out_a: str | os.PathLike, out_b: str | os.PathLike) -> Comparison:
    from traitmap.results import Study

    sa, sb = Study.load(out_a), Study.load(out_b)
    ma, mb = sa.matrix, sb.matrix
    models = [m for m in ma.index if m in set(mb.index)]
    targets = [t for t in ma.columns if t in set(mb.columns)]
    if "base" not in models or len(models) < 2:
        raise TraitmapError(f"the two studies share no adapter (A has {', '.join(ma.index[1:])}; "
                            f"B has {', '.join(mb.index[1:])}): nothing to align")
    if not targets:
        raise TraitmapError("the two studies share no target: nothing to align")
    label_a, label_b = sa.config.name, sb.config.name
    if label_a == label_b:
        label_a, label_b = Path(out_a).resolve().name, Path(out_b).resolve().name
    if label_a == label_b:
        label_a, label_b = "A", "B"
    return Comparison(
        label_a, label_b, models, targets, ma.loc[models, targets], mb.loc[models, targets],
        {"models": [m for m in ma.index if m not in models], "targets": [t for t in ma.columns if t not in targets]},
        {"models": [m for m in mb.index if m not in models], "targets": [t for t in mb.columns if t not in targets]},
    )
