"""The analyses that explain a transfer matrix (PAPER.md, steps 2-4, and beyond).

Each module holds small fit() objects over DataFrames and a `run(study, out_dir)` that
writes its results to `analysis/` and returns the paths. This registry only lists them
in the order they run.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from traitmap.errors import TraitmapError

ANALYSES = ["uncertainty", "traits", "lengths", "classes", "similarity", "dependency", "predict"]


def run_all(study, only: list[str] | None = None, console=None) -> dict[str, list[Path]]:
    """Run the analyses (all, or `only` these) and return the files each wrote."""
    unknown = sorted(set(only or []) - set(ANALYSES))
    if unknown:
        raise TraitmapError(f"unknown analysis '{unknown[0]}' (choose from {', '.join(ANALYSES)})", field="--only")
    written = {}
    for name in only or ANALYSES:
        if console is not None:
            console.print(f"[dim]analysis: {name}[/dim]")
        module = importlib.import_module(f"traitmap.analysis.{name}")
        written[name] = module.run(study, study.analysis_dir)
    return written
