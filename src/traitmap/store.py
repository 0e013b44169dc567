"""The study's SQLite store: what is done, what is left, and every per-example record.

A cell's records and its "done" mark are written in one transaction, so a study killed
at any point holds either a whole cell or none of it. Files next to the database
(CSV, JSON) are written with `write_atomic`: a temporary file renamed into place.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT, finished TEXT, command TEXT,
  config TEXT, versions TEXT, machine TEXT, seconds REAL
);
CREATE TABLE IF NOT EXISTS adapters (
  name TEXT, seed INTEGER, source TEXT, variant TEXT, path TEXT, train_log TEXT, finished TEXT,
  PRIMARY KEY (name, seed)
);
CREATE TABLE IF NOT EXISTS cells (
  model TEXT, seed INTEGER, task TEXT, n INTEGER, score REAL, seconds REAL, finished TEXT,
  PRIMARY KEY (model, seed, task)
);
CREATE TABLE IF NOT EXISTS records (
  model TEXT, seed INTEGER, task TEXT, example_id TEXT, prompt TEXT, output TEXT, output_tokens INTEGER,
  parsed TEXT, gold TEXT, correct REAL, logprobs TEXT,
  PRIMARY KEY (model, seed, task, example_id)
);
"""

RECORD_COLUMNS = ["model", "seed", "task", "example_id", "prompt", "output", "output_tokens", "parsed", "gold", "correct", "logprobs"]


def write_atomic(path: Path, text: str) -> Path:
    """Write text so that readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_ready(value):
    """Plain JSON types; NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path: Path, obj) -> Path:
    return write_atomic(path, json.dumps(json_ready(obj), indent=2, default=str) + "\n")


def write_csv(path: Path, frame: pd.DataFrame, index: bool = False) -> Path:
    return write_atomic(path, frame.to_csv(index=index))


class Store:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    # runs ------------------------------------------------------------------------------
    def start_run(self, started: str, command: str, config: dict, versions: dict, machine: dict) -> int:
        with self.db:
            cur = self.db.execute(
                "INSERT INTO runs (started, command, config, versions, machine) VALUES (?,?,?,?,?)",
                (started, command, json.dumps(config), json.dumps(versions), json.dumps(machine)),
            )
        return cur.lastrowid

    def finish_run(self, run_id: int, finished: str, seconds: float) -> None:
        with self.db:
            self.db.execute("UPDATE runs SET finished=?, seconds=? WHERE id=?", (finished, seconds, run_id))

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM runs ORDER BY id", self.db)

    # adapters --------------------------------------------------------------------------
    def adapter_done(self, name: str, seed: int) -> bool:
        row = self.db.execute("SELECT path FROM adapters WHERE name=? AND seed=?", (name, seed)).fetchone()
        return row is not None and (self._located(row[0]) / "adapter_config.json").is_file()

    def _located(self, stored: str) -> Path:
        """An adapter's folder: stored relative to the study folder, so a moved folder still resumes
        (older stores hold the path as it was given)."""
        here = self.path.parent / stored
        return here if here.exists() else Path(stored)

    def add_adapter(self, name: str, seed: int, source: str, variant: dict | None, path: Path, train_log: dict, finished: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO adapters VALUES (?,?,?,?,?,?,?)",
                (name, seed, source, json.dumps(variant), self._relative(path), json.dumps(train_log), finished),
            )

    def _relative(self, path: Path) -> str:
        path, root = Path(path).resolve(), self.path.parent.resolve()
        return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)

    def adapters(self) -> pd.DataFrame:
        frame = pd.read_sql_query("SELECT name, seed, source, variant, path, train_log, finished FROM adapters ORDER BY rowid", self.db)
        frame["path"] = frame["path"].map(lambda stored: str(self._located(stored)))
        return frame

    # cells and records -----------------------------------------------------------------
    def done_cells(self) -> set[tuple[str, int, str]]:
        return set(self.db.execute("SELECT model, seed, task FROM cells").fetchall())

    def add_cell(self, model: str, seed: int, task: str, records: list[dict], seconds: float, finished: str) -> float:
        """Records and the done mark in one transaction: a cell is whole or absent. Returns
        the cell's score, the mean of its records' `correct` (NaN for no records)."""
        score = sum(r["correct"] for r in records) / len(records) if records else float("nan")
        with self.db:
            self.db.execute("DELETE FROM records WHERE model=? AND seed=? AND task=?", (model, seed, task))
            self.db.executemany(
                f"INSERT INTO records ({','.join(RECORD_COLUMNS)}) VALUES ({','.join('?' * len(RECORD_COLUMNS))})",
                [tuple(r[c] for c in RECORD_COLUMNS) for r in records],
            )
            self.db.execute("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?)", (model, seed, task, len(records), score, seconds, finished))
        return score

    def cells(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM cells ORDER BY rowid", self.db)

    def records(self, task: str | None = None, model: str | None = None) -> pd.DataFrame:
        where, args = [], []
        if task is not None:
            where.append("task=?")
            args.append(task)
        if model is not None:
            where.append("model=?")
            args.append(model)
        sql = f"SELECT {','.join(RECORD_COLUMNS)} FROM records" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY rowid"
        return pd.read_sql_query(sql, self.db, params=args)
