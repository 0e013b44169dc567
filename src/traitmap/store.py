"""The study's SQLite store: what is done, what is left, and every per-example record.

A cell's records and its "done" mark are written in one transaction, so a study killed
at any point holds either a whole cell or none of it. One process writes a study at a
time: `StudyLock` holds an flock on a file in the output folder. A write that fails
(full disk, read-only database) is a TraitmapError naming the file; the files beside the
database are written by `traitmap.files`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
from pathlib import Path

import pandas as pd

from traitmap.errors import TraitmapError, is_disk_full
from traitmap.files import write_error
from traitmap.metrics import CellMetrics
from traitmap.record import RECORD_FIELDS, Record

LOCK_FILE = ".traitmap.lock"
SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL"}
RECORD_SQL = ", ".join(f"{name} {SQL_TYPES[kind]}" for name, kind in Record.__annotations__.items())

SCHEMA = f"""
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
CREATE TABLE IF NOT EXISTS cell_metrics (
  model TEXT, seed INTEGER, task TEXT, metric TEXT, value REAL,
  PRIMARY KEY (model, seed, task, metric)
);
CREATE TABLE IF NOT EXISTS answer_rates (
  model TEXT, seed INTEGER, task TEXT, label TEXT, rate REAL,
  PRIMARY KEY (model, seed, task, label)
);
CREATE TABLE IF NOT EXISTS records (
  {RECORD_SQL},
  PRIMARY KEY (model, seed, task, example_id)
);
"""


class StudyLock:
    """One writer per output folder: an exclusive flock on `LOCK_FILE` inside it.

    The kernel drops an flock when its process ends, however it ends (SIGKILL included),
    so a killed run never leaves the folder locked. A second writer is refused at once.
    """

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_FILE
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise write_error(error, self.path) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip()
            os.close(self.fd)
            raise TraitmapError(f"another traitmap process{f' (pid {holder})' if holder else ''} is writing to this "
                                "output folder: wait for it to finish, or use another --out", file=out_dir) from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


def lock_holder(out_dir: Path) -> int | None:
    """The pid of the live process writing to `out_dir` (-1 if unknown), or None; only reads."""
    try:
        fd = os.open(Path(out_dir) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        text = os.read(fd, 32).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)


class Store:
    """The database of one study. `create=False` opens an existing one only (readers);
    `lock` is released on close (the writer's `StudyLock`)."""

    def __init__(self, path: Path, *, create: bool = True, lock: StudyLock | None = None):
        self.path, self.lock = Path(path), lock
        if not create and not self.path.is_file():
            raise TraitmapError("not a traitmap output directory (no traitmap.sqlite)", file=self.path.parent)
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path)
            with self.writing():
                self.db.executescript(SCHEMA)
        except OSError as error:
            raise write_error(error, self.path) from None
        except sqlite3.DatabaseError as error:
            if is_disk_full(error):
                raise write_error(error, self.path) from None
            raise TraitmapError(f"not a traitmap database ({error})", file=self.path) from None

    def close(self) -> None:
        self.db.close()
        if self.lock is not None:
            self.lock.release()

    @contextlib.contextmanager
    def writing(self):
        """One transaction; a full disk or a read-only file becomes a TraitmapError naming the database."""
        try:
            with self.db:
                yield
        except sqlite3.OperationalError as error:
            text = str(error).lower()
            if is_disk_full(error) or "readonly" in text or "read-only" in text or "unable to open" in text:
                raise write_error(error, self.path) from None
            raise

    # runs ------------------------------------------------------------------------------
    def start_run(self, started: str, command: str, config: dict, versions: dict, machine: dict) -> int:
        with self.writing():
            cur = self.db.execute(
                "INSERT INTO runs (started, command, config, versions, machine) VALUES (?,?,?,?,?)",
                (started, command, json.dumps(config), json.dumps(versions), json.dumps(machine)),
            )
        return cur.lastrowid

    def finish_run(self, run_id: int, finished: str, seconds: float) -> None:
        with self.writing():
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
        with self.writing():
            self.db.execute(
                "INSERT OR REPLACE INTO adapters VALUES (?,?,?,?,?,?,?)",
                (name, seed, source, json.dumps(variant), self._relative(path), json.dumps(train_log), finished),
            )

    def forget_adapter(self, name: str) -> list[Path]:
        """Drop an adapter (every seed), its cells and their records in one transaction, so
        that the plan trains and evaluates it again; returns its folders for the caller to remove."""
        folders = [self._located(row[0]) for row in
                   self.db.execute("SELECT path FROM adapters WHERE name=?", (name,)).fetchall()]
        with self.writing():
            self.db.execute("DELETE FROM adapters WHERE name=?", (name,))
            self.db.execute("DELETE FROM records WHERE model=?", (name,))
            self.db.execute("DELETE FROM cells WHERE model=?", (name,))
        return folders

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

    def add_cell(self, model: str, seed: int, task: str, records: list[Record], seconds: float, finished: str,
                 metrics: CellMetrics) -> float:
        """Records, metrics and the done mark in one transaction: a cell is whole or absent.
        The metrics are the task's (`Task.cell_metrics`); returns the cell's score."""
        with self.writing():
            self.db.execute("DELETE FROM records WHERE model=? AND seed=? AND task=?", (model, seed, task))
            self.db.executemany(
                f"INSERT INTO records ({','.join(RECORD_FIELDS)}) VALUES ({','.join('?' * len(RECORD_FIELDS))})",
                [tuple(r[c] for c in RECORD_FIELDS) for r in records],
            )
            self._write_metrics(model, seed, task, metrics)
            self.db.execute("INSERT OR REPLACE INTO cells VALUES (?,?,?,?,?,?,?)",
                            (model, seed, task, len(records), metrics.score, seconds, finished))
        return metrics.score

    def add_metrics(self, model: str, seed: int, task: str, metrics: CellMetrics) -> None:
        """The metrics of a cell evaluated before cells stored them (its score is left as it was)."""
        with self.writing():
            self._write_metrics(model, seed, task, metrics)

    def _write_metrics(self, model: str, seed: int, task: str, metrics: CellMetrics) -> None:
        key = (model, seed, task)
        self.db.execute("DELETE FROM cell_metrics WHERE model=? AND seed=? AND task=?", key)
        self.db.execute("DELETE FROM answer_rates WHERE model=? AND seed=? AND task=?", key)
        self.db.executemany("INSERT INTO cell_metrics VALUES (?,?,?,?,?)",
                            [(*key, name, value) for name, value in metrics.values.items()])
        self.db.executemany("INSERT INTO answer_rates VALUES (?,?,?,?,?)",
                            [(*key, label, rate) for label, rate in metrics.answer_rates.items()])

    def cells_without_metrics(self) -> list[tuple[str, int, str]]:
        """Finished cells with no stored metrics: evaluated by a version that stored only the score."""
        return self.db.execute("SELECT model, seed, task FROM cells c WHERE NOT EXISTS (SELECT 1 FROM cell_metrics m "
                               "WHERE m.model=c.model AND m.seed=c.seed AND m.task=c.task) ORDER BY rowid").fetchall()

    def cell_metrics(self) -> pd.DataFrame:
        """Long table: one row per (model, seed, task, metric)."""
        return pd.read_sql_query("SELECT model, seed, task, metric, value FROM cell_metrics ORDER BY rowid", self.db)

    def answer_rates(self) -> pd.DataFrame:
        """Long table: one row per (model, seed, task, label); label "" is an unparsed answer."""
        return pd.read_sql_query("SELECT model, seed, task, label, rate FROM answer_rates ORDER BY rowid", self.db)

    def mean_output_tokens(self) -> dict[str, float]:
        """Mean generated tokens per generate task (records without choice log-probs)."""
        rows = self.db.execute("SELECT task, AVG(output_tokens) FROM records WHERE logprobs = '' GROUP BY task").fetchall()
        return {task: float(mean) for task, mean in rows if mean is not None}

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
        sql = f"SELECT {','.join(RECORD_FIELDS)} FROM records" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY rowid"
        return pd.read_sql_query(sql, self.db, params=args)
