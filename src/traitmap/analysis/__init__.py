"""The analyses that explain a transfer matrix (docs/paper.md, steps 2-4, and beyond).

Each module holds small fit() objects over DataFrames and a `run(study, out_dir)` that
writes its results to `analysis/` and returns the paths. A module whose results need a
minimum study (enough sources, a generate target) states it in `MINIMUM` and defines
`shortfall(study)`: why this study is below it, or None. This registry only lists them
in the order they run.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
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


def run_all(study, only: list[str] | None = None, note: Callable[[str], None] | None = None) -> dict[str, list[Path]]:
    """Run the analyses (all, or `only` these) and return the files each wrote; `note`
    gets a line per analysis (what it wrote or why it was skipped, and its time).

    An analysis whose `shortfall(study)` names a reason (too few sources for prediction,
    no generate target for lengths), or that raises TraitmapError, is skipped, and the
    reason is kept in `analysis/skipped.json` for the report. A module marked `PARTIAL`
    still writes the parts it can. Other exceptions are bugs and propagate.
    """
    from traitmap.files import write_json

    check_names(only)
    skipped_path = study.analysis_dir / "skipped.json"
    skipped = skipped_reasons(study)
    written = {}
    for name in only or ANALYSES:
        module = importlib.import_module(f"traitmap.analysis.{name}")
        start = time.perf_counter()
        reason = shortfall(module, study)
        written[name] = []
        try:
            if reason is None or getattr(module, "PARTIAL", False):
                written[name] = module.run(study, study.analysis_dir)
        except TraitmapError as e:
            reason = str(e)
        if reason is None:
            skipped.pop(name, None)
        else:
            skipped[name] = reason
        if note is not None:
            outcome = f"skipped: {reason}" if reason else f"{len(written[name])} files"
            if reason and written[name]:
                outcome += f" (wrote {len(written[name])} files for the rest)"
            note(f"analysis {name}: {outcome} ({time.perf_counter() - start:.1f} s)")
    write_json(skipped_path, skipped)
    return written


def skipped_reasons(study) -> dict[str, str]:
    """analysis -> why it did not run (or ran only in part) on this study, from analysis/skipped.json."""
    path = study.analysis_dir / "skipped.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def shortfall(module, study) -> str | None:
    """Why `study` is below what `module` needs (one line, starting with the minimum), or None."""
    check = getattr(module, "shortfall", None)
    return check(study) if check is not None else None
