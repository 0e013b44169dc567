"""`traitmap export`: a finished study as a small folder to publish or commit.

It keeps the results (matrix, intervals, PCA, analyses, report, config) and replaces the
SQLite store and the adapters with plain tables: per-example scores (scores.csv.gz),
per-cell timings and metrics (cells.csv), each choice cell's answer rates
(answer_rates.csv), each adapter's training log (training.csv) and how each adapter's
training ended (adapters.csv). Anything that reads a study folder for results
(`traitmap findings`) reads an export the same way. Its config.json names the local data
folder by its name alone (`portable_saved`), not by a machine's path.
The export is built beside its destination and moved into place whole.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pandas as pd

from traitmap.analysis.predict import FEATURES_FILE, source_feature_table
from traitmap.errors import TraitmapError
from traitmap.files import atomic_folder, write_csv, write_json
from traitmap.metrics import CELL_KEY, metric_tables
from traitmap.plan import CONFIG_FILE, adapter_path
from traitmap.record import SCORE_FIELDS
from traitmap.results import ADAPTERS_FILE, ANSWER_RATES_FILE, CELLS_FILE, SCORES_FILE, TRAINING_FILE, Study
from traitmap.config import HUB

RESULT_FILES = ["matrix.csv", "gains.csv", "pca.json", "pca_loadings.csv", "pca_scores.csv"]
RESULT_FOLDERS = ["analysis", "report"]
CELL_COLUMNS = ["model", "seed", "task", "n", "score", "seconds"]
TRAINING_COLUMNS = ["adapter", "seed", "step", "loss", "val_loss", "grad_norm", "tokens", "elapsed"]
ADAPTER_COLUMNS = ["adapter", "seed", "steps_trained", "best_val_loss", "converged", "stopped_by", "share_cut",
                   "share_answer_end_lost", "max_length"]


def portable_saved(saved: dict) -> dict:
    """A run's config.json as an export keeps it: the data folder the run was given, and
    the study file's data_dir, by name alone, since the absolute path names one machine.
    Where the export is read, TRAITMAP_DATA_DIR names the data folder (`results.recorded_data_dir`);
    task_dirs stay as they are, since the findings read those tasks' definitions."""

    def name(folder: str | None) -> str | None:
        return folder if not folder or folder == HUB else Path(folder).name

    config = dict(saved["config"], data_dir=name(saved["config"].get("data_dir")))
    return dict(saved, config=config, data_dir=name(saved.get("data_dir")))


def export_study(study, dest: Path) -> Path:
    """Write the export of a finished `study` to `dest` (replacing an earlier export there)."""
    dest = Path(dest)
    if dest.resolve() == study.out_dir.resolve():
        raise TraitmapError("the export must go to another folder than the study's", file=dest)
    if dest.exists() and not (dest / SCORES_FILE).is_file():
        raise TraitmapError("exists and is not an earlier export: refusing to replace it", file=dest)
    missing = study.matrix.stack(future_stack=True).loc[lambda s: s.isna()]
    if len(missing):
        model, task = missing.index[0]
        raise TraitmapError(f"the study is not finished ({len(missing)} cells to evaluate, e.g. {model} on {task}): "
                            "run it to the end first", file=study.out_dir)
    with atomic_folder(dest) as tmp:
        write_json(tmp / CONFIG_FILE, portable_saved(json.loads((study.out_dir / CONFIG_FILE).read_text("utf-8"))))
        for name in RESULT_FILES:
            if (study.out_dir / name).is_file():
                shutil.copy2(study.out_dir / name, tmp / name)
        for name in RESULT_FOLDERS:
            if (study.out_dir / name).is_dir():
                shutil.copytree(study.out_dir / name, tmp / name)
        keep_source_features(study, tmp / "analysis" / FEATURES_FILE)
        records = study.records()
        write_scores(records[list(SCORE_FIELDS)], tmp / SCORES_FILE)
        study.cells[CELL_COLUMNS].to_csv(tmp / CELLS_FILE, index=False)
        write_metric_files(tmp, records, study.task)
        training_log(study).to_csv(tmp / TRAINING_FILE, index=False)
        adapter_summary(study).to_csv(tmp / ADAPTERS_FILE, index=False)
    return dest


def write_metric_files(folder: Path, records: pd.DataFrame, task_of) -> None:
    """Add each choice cell's metrics to the folder's cells.csv and write answer_rates.csv,
    computed from the per-example records by their tasks (`task_of(name)`); a published
    export whose store is gone gets them from its scores.csv.gz the same way."""
    metrics, rates = metric_tables(records, task_of)
    cells = pd.read_csv(folder / CELLS_FILE)[CELL_COLUMNS]
    cells.merge(metrics, how="left", on=CELL_KEY).to_csv(folder / CELLS_FILE, index=False)
    rates.to_csv(folder / ANSWER_RATES_FILE, index=False)


def keep_source_features(study, path: Path) -> None:
    """What `traitmap predict` reads of the trained sources, computed now while their data is
    at hand (when the analyses did not write it); without the data, predict says so later."""
    if path.is_file():
        return
    try:
        features = source_feature_table(study)
    except TraitmapError:
        return
    write_csv(path, features, index=True)


def write_scores(records: pd.DataFrame, path: Path) -> None:
    """Gzip without a timestamp in its header, so an unchanged study exports byte for byte."""
    text = records.to_csv(index=False, float_format="%.6g")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(text.encode("utf-8"))


def training_log(study) -> pd.DataFrame:
    """Every adapter's per-step log from its training_log.json."""
    frames = []
    for name, seed in zip(study.adapters["name"], study.adapters["seed"]):
        path = adapter_path(study.out_dir, name, int(seed)) / "training_log.json"
        if not path.is_file():
            raise TraitmapError("missing: an adapter's training log", file=path)
        steps = pd.DataFrame(json.loads(path.read_text(encoding="utf-8"))["log"])
        frames.append(steps.assign(adapter=name, seed=int(seed)))
    frame = pd.concat(frames, ignore_index=True)
    return frame.reindex(columns=TRAINING_COLUMNS)  # val_loss empty where it was not measured


def adapter_summary(study) -> pd.DataFrame:
    """One row per adapter: how long it trained, its best validation loss, whether that loss
    had stopped improving, what ended training, and what max_length cut (empty where the
    adapter's log predates a field)."""
    rows = []
    for name, seed, raw in zip(study.adapters["name"], study.adapters["seed"], study.adapters["train_log"]):
        log = json.loads(raw or "{}")
        rows.append({"adapter": name, "seed": int(seed), "steps_trained": log.get("steps"),
                     **{c: log.get(c) for c in ADAPTER_COLUMNS[3:]}})
    return pd.DataFrame(rows, columns=ADAPTER_COLUMNS)


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def rewrite_metric_files(folder: Path) -> None:
    """`write_metric_files` for an export from the per-example answers it keeps (scores.csv.gz)."""
    with Study.load(folder) as export:
        write_metric_files(export.out_dir, export.records(), export.task)
