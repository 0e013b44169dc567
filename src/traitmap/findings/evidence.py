"""What a claim is tested on: one study's results, read from its run folder or from a
published copy of it (`traitmap export`), and paired bootstrap estimates over them.

Every difference between models is paired: all models answered the same examples, and
each bootstrap replicate resamples those examples once for all of them
(`analysis.uncertainty.resample_matrix`), so an interval is as narrow as the pairing allows.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from traitmap import plan, tasks
from traitmap.analysis.uncertainty import MatrixDraws, percentile_interval, resample_matrix
from traitmap.errors import TraitmapError
from traitmap.study import StudyConfig

SCORES_FILE = "scores.csv.gz"  # the per-example table an export keeps instead of the SQLite store
SCORE_COLUMNS = ["model", "seed", "task", "example_id", "correct", "parsed", "gold"]
N_BOOT = 2000
BOOT_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A number with its 95% bootstrap interval (score units: 0.1 is 10 points)."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


class Evidence:
    """One study's matrix, per-example scores and analysis files."""

    def __init__(self, folder: Path, config: StudyConfig, matrix: pd.DataFrame,
                 load_records: Callable[[], pd.DataFrame]):
        self.folder = Path(folder)
        self.config = config
        self.matrix = matrix
        self._load_records = load_records

    @classmethod
    def of_folder(cls, folder: str | Path) -> "Evidence":
        """A run folder (records from its store) or an exported one (records from scores.csv.gz)."""
        folder = Path(folder)
        config = plan.saved_config(folder)
        matrix_file = folder / "matrix.csv"
        if not matrix_file.is_file():
            raise TraitmapError("no matrix.csv: the study has not been evaluated yet", file=folder)
        matrix = pd.read_csv(matrix_file, index_col="model")
        scores = folder / SCORES_FILE
        if scores.is_file():
            return cls(folder, config, matrix, lambda: read_scores(scores))
        from traitmap.api import Study

        return cls(folder, config, matrix, lambda: Study.load(folder).records()[SCORE_COLUMNS])

    @classmethod
    def of_study(cls, study) -> "Evidence":
        return cls(study.out_dir, study.config, study.matrix, study.records)

    @property
    def name(self) -> str:
        return self.config.name

    @cached_property
    def records(self) -> pd.DataFrame:
        return self._load_records()

    @cached_property
    def draws(self) -> MatrixDraws:
        return resample_matrix(self.records, N_BOOT, BOOT_SEED)

    def table(self, name: str) -> pd.DataFrame | None:
        path = self.folder / "analysis" / name
        return pd.read_csv(path) if path.is_file() else None

    def document(self, name: str) -> dict | None:
        """A JSON file of the study: pca.json sits beside matrix.csv, the rest under analysis/."""
        for path in (self.folder / name, self.folder / "analysis" / name):
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
        return None

    # which adapters are which ------------------------------------------------------------
    def adapter(self, task: str, variant_kind: str | None = None) -> str | None:
        """The adapter trained on `task` (in that variant, or plain), if the study has one."""
        for source in self.config.sources:
            kind = (source.variant or {}).get("kind")
            if source.task == task and kind == variant_kind and source.name in self.matrix.index:
                return source.name
        return None

    def plain_adapters(self, tag: str) -> list[str]:
        """Adapters trained, without a variant, on a task carrying `tag`."""
        return [s.name for s in self.config.sources
                if not s.variant and tag in self.task(s.task).tags and s.name in self.matrix.index]

    def targets(self, tag: str | None = None) -> list[str]:
        return [t for t in self.matrix.columns if tag is None or tag in self.task(t).tags]

    def task(self, name: str):
        return tasks.get(name, extra_dirs=self.config.task_dirs)

    # estimates ---------------------------------------------------------------------------
    def difference(self, first: Iterable[str], second: Iterable[str], targets: Iterable[str]) -> Estimate:
        """Mean score of the `first` models minus that of the `second`, averaged over `targets`."""
        models, columns = list(self.draws.point.index), list(self.draws.point.columns)
        rows_a = [models.index(m) for m in first]
        rows_b = [models.index(m) for m in second]
        cols = [columns.index(t) for t in targets]
        if not rows_a or not rows_b or not cols:
            raise TraitmapError("a difference needs models on both sides and at least one target")

        def side(values: np.ndarray, rows: list[int]) -> np.ndarray:
            return values[..., rows, :][..., cols].mean(axis=(-1, -2))

        point = self.draws.point.to_numpy(dtype=float)
        replicates = side(self.draws.draws, rows_a) - side(self.draws.draws, rows_b)
        low, high = percentile_interval(replicates, LEVEL)
        return Estimate(float(side(point, rows_a) - side(point, rows_b)), float(low), float(high))

    def score(self, model: str, target: str) -> Estimate:
        models, columns = list(self.draws.point.index), list(self.draws.point.columns)
        i, j = models.index(model), columns.index(target)
        low, high = percentile_interval(self.draws.draws[:, i, j], LEVEL)
        return Estimate(float(self.draws.point.iat[i, j]), float(low), float(high))

    def examples(self, target: str) -> int:
        return int(self.draws.n[target].max())


def read_scores(path: Path) -> pd.DataFrame:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        frame = pd.read_csv(f, dtype={"example_id": str, "parsed": str, "gold": str, "model": str, "task": str})
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise TraitmapError(f"lacks the column(s) {', '.join(missing)}", file=path)
    return frame


def median_interval(values: Iterable[float], seed: int = BOOT_SEED) -> Estimate:
    """The median of independent values with a percentile bootstrap interval."""
    x = np.asarray(list(values), dtype=float)
    x = x[np.isfinite(x)]
    if not len(x):
        raise TraitmapError("no finite values to summarize")
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, len(x), size=(N_BOOT, len(x)))], axis=1)
    low, high = percentile_interval(medians, LEVEL)
    return Estimate(float(np.median(x)), float(low), float(high))
