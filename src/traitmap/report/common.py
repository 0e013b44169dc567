"""Number formatting and analysis-file reading shared by the report sections."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .blocks import Section

MINUS = "\u2212"
UNKNOWN = "—"  # what a page shows for a number that was not measured, never "nan"


def points(gain: float, digits: int = 1) -> str:
    """A gain in score units (0..1) as signed percentage points: +12.0, −3.0."""
    if gain is None or pd.isna(gain):
        return UNKNOWN
    value = round(float(gain) * 100, digits)
    if value == 0:
        value = 0.0  # no "−0.0"
    return f"{value:+.{digits}f}".replace("-", MINUS)


def signed(value: float, digits: int = 2) -> str:
    if value is None or pd.isna(value):
        return UNKNOWN
    value = round(float(value), digits)
    if value == 0:
        value = 0.0
    return f"{value:+.{digits}f}".replace("-", MINUS)


def percent(score: float, digits: int = 1) -> str:
    if score is None or pd.isna(score):
        return UNKNOWN
    return f"{float(score) * 100:.{digits}f}%"


def number(value: float) -> str:
    value = float(value)
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:.1f}"


def listing(items: list[str]) -> str:
    items = [str(i) for i in items]
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def analysis_file(study, name: str) -> Path | None:
    directory = getattr(study, "analysis_dir", None)
    if directory is None:
        return None
    path = Path(directory) / name
    return path if path.is_file() else None


def read_csv(study, name: str, columns: list[str]) -> tuple[pd.DataFrame | None, str | None]:
    """The analysis table `name`, or why it cannot be drawn (absent, empty, missing columns)."""
    path = analysis_file(study, name)
    if path is None:
        return None, NOT_RUN
    df = pd.read_csv(path)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        return None, f"analysis/{name} lacks the column(s) {', '.join(missing)}; nothing drawn."
    if df.empty:
        return None, f"analysis/{name} is empty; nothing drawn."
    return df, None


def read_matrix(study, name: str) -> pd.DataFrame | None:
    """A square table saved with its index as the first column (e.g. dataset x dataset)."""
    path = analysis_file(study, name)
    if path is None:
        return None
    df = pd.read_csv(path, index_col=0)
    df.index, df.columns = df.index.astype(str), df.columns.astype(str)
    return None if df.empty else df


def read_json(study, name: str) -> dict | None:
    path = analysis_file(study, name)
    return json.loads(path.read_text(encoding="utf-8")) if path is not None else None


NOT_RUN = "Not computed for this study: its analyses have not run (`traitmap analyze` on its folder runs them)."


def skipped(study, analysis: str) -> str | None:
    """Why the analysis `analysis` did not run on this study (from analysis/skipped.json), or None."""
    reason = (read_json(study, "skipped.json") or {}).get(analysis)
    return f"Skipped for this study: {reason.rstrip('.')}." if reason else None


def missing(id: str, title: str, why: str) -> Section:
    return Section(id=id, title=title, note=why)


def source_tasks(study) -> dict[str, str]:
    """Adapter name -> the task its source data came from (an adapter is named after its source)."""
    out = {}
    for source in study.config.sources:
        out[str(source.name)] = str(source.task)
    adapters = getattr(study, "adapters", None)
    if isinstance(adapters, pd.DataFrame) and {"name", "source"} <= set(adapters.columns):
        for name, src in zip(adapters["name"], adapters["source"]):
            out.setdefault(str(name), out.get(str(src), str(src)))
    return out
