"""The analyses that explain a transfer matrix (PAPER.md, steps 2-4, and beyond).

Each module holds small fit() objects over DataFrames and a `run(study, out_dir)` that
writes its results to `analysis/` and returns the paths. This registry only lists them
in the order they run.
"""

from __future__ import annotations

import importlib
import json
import time
import warnings
from pathlib import Path

from traitmap.errors import TraitmapError

ANALYSES = ["uncertainty", "traits", "lengths", "classes", "similarity", "dependency", "predict"]


def analysis_settings(study) -> dict:
    """The user's [analysis] settings, or {} when the study has none."""
    config = getattr(study, "config", None)
    return dict(getattr(config, "analysis", None) or {})


def check_names(only: list[str] | None) -> None:
    unknown = sorted(set(only or []) - set(ANALYSES))
    if unknown:
        raise TraitmapError(f"unknown analysis '{unknown[0]}' (choose from {', '.join(ANALYSES)})", field="--only")


def run_all(study, only: list[str] | None = None, console=None) -> dict[str, list[Path]]:
    """Run the analyses (all, or `only` these) and return the files each wrote.

    An analysis that does not apply to this study (too few sources for prediction, no
    generate target for lengths) raises TraitmapError; it is skipped, and the reason is
    kept in `analysis/skipped.json` for the report. Other exceptions are bugs and propagate.
    """
    from traitmap.store import write_json

    check_names(only)
    skipped_path = study.analysis_dir / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.is_file() else {}
    written = {}
    for name in only or ANALYSES:
        module = importlib.import_module(f"traitmap.analysis.{name}")
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # Bootstrap replicates of a tiny matrix can be degenerate (zero variance);
                # numpy/sklearn then warn on every replicate. The results say so instead.
                warnings.simplefilter("ignore", RuntimeWarning)
                written[name] = module.run(study, study.analysis_dir)
            skipped.pop(name, None)
        except TraitmapError as e:
            written[name] = []
            skipped[name] = str(e)
        if console is not None:
            note = f"skipped: {skipped[name]}" if name in skipped else f"{len(written[name])} files"
            console.print(f"[dim]analysis {name}: {note} ({time.perf_counter() - start:.1f} s)[/dim]")
    write_json(skipped_path, skipped)
    return written
