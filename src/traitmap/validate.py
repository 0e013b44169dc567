"""Validate a whole study before anything is written.

`validate_study` reads everything the plan will read and checks it the way a user can
fix it: the study file (already parsed by `study.load`), every task file, the base
model (that it exists, without loading its weights; its tokenizer when it is already
on disk), every row of every split the plan reads (sources' train splits, targets'
test splits), and the output folder. Each mistake is one TraitmapError naming the file,
line and field. It only reads: a study that fails here leaves no trace, and a finished
study's folder is untouched until the new plan is known to be valid.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from traitmap import data, models, plan, tasks
from traitmap.errors import TraitmapError
from traitmap.store import LOCK_FILE
from traitmap.study import StudyConfig, _line_of, line_of_value


def validate_study(config: StudyConfig, data_dir: Path | None, out_dir: Path | None = None) -> None:
    """Everything a run of `config` reads, checked before the output folder is created or touched."""
    where = _StudyFile(config)
    used = check_tasks(config, where)
    model_dir = check_model(config, where)
    try:
        tokenizer = None if model_dir is None else models.load_tokenizer(model_dir)  # the tokenizer files only
    except TraitmapError as error:
        raise where.moved(error, "base_model") from None
    if tokenizer is not None:
        for task in used.values():
            task.check_tokens(tokenizer)
    check_splits(config, data_dir, used, where)
    if out_dir is not None:
        check_out_dir(config, Path(out_dir))


class _StudyFile:
    """Names the study file's line for an error about a value in it."""

    def __init__(self, config: StudyConfig):
        self.path = config.path or "<study>"
        try:
            self.text = Path(config.path).read_text(encoding="utf-8-sig") if config.path else ""
        except (OSError, UnicodeDecodeError):
            self.text = ""

    def error(self, message: str, key: str, value: str | None = None) -> TraitmapError:
        line = line_of_value(self.text, key, value) if value is not None else _line_of(self.text, key)
        return TraitmapError(message, file=self.path, line=line, field=key)

    def moved(self, error: TraitmapError, key: str, value: str | None = None) -> TraitmapError:
        """A TraitmapError without a file, placed at the study line it came from."""
        if error.file is not None:
            return error
        return self.error(error.message, key, value)


def check_tasks(config: StudyConfig, where: _StudyFile | None = None) -> dict[str, tasks.Task]:
    """Every task file is valid; every source and target names a known task that may be
    trained on (sources) or scored (targets); variants fit their task. Returns the tasks used."""
    where = where or _StudyFile(config)
    known = set(tasks.names(extra_dirs=config.task_dirs))  # validates every task file on the way
    used: dict[str, tasks.Task] = {}

    def task(name: str, key: str) -> tasks.Task:
        if name not in known:
            raise where.error(f"unknown task '{name}'; known tasks: {', '.join(sorted(known))}"
                              + ("" if config.task_dirs else " (your own tasks: list their folder in task_dirs)"),
                              key, name)
        if name not in used:
            used[name] = tasks.get(name, extra_dirs=config.task_dirs)
        return used[name]

    for source in config.sources:
        found = task(source.task, "sources")
        if not found.can_train:
            raise where.error(f"task '{source.task}' cannot be a training source: {found.train_refusal}",
                              "sources", source.task)
        if "train" not in found.splits:
            raise where.error(f"task '{source.task}' has no 'train' split to train on (it has: "
                              f"{', '.join(found.splits)}; see {found.file})", "sources", source.task)
        if source.variant:
            _check_variant_fits(source, found, where)
    for target in config.targets:
        found = task(target, "targets")
        if not found.can_evaluate:
            raise where.error(f"task '{target}' is a training source only: it has nothing to score answers against "
                              f"(metric = \"none\" in {found.file})", "targets", target)
        if "test" not in found.splits:
            raise where.error(f"task '{target}' has no 'test' split to evaluate on (it has: "
                              f"{', '.join(found.splits)}; see {found.file})", "targets", target)
    return used


def _check_variant_fits(source, task: tasks.Task, where: _StudyFile) -> None:
    kind = source.variant["kind"]
    _, _, _, choice_only = data._VARIANTS[kind]
    if choice_only and task.kind != "choice":
        raise where.error(f"source '{source.name}': variant '{kind}' changes labels, and task '{task.name}' is a "
                          f"{task.kind} task without labels", "variant", kind)
    unknown = sorted(set(source.variant.get("ratio", {})) - set(task.choices or []))
    if unknown:
        raise where.error(f"source '{source.name}': ratio names label '{unknown[0]}', which task '{task.name}' does not "
                          f"have (its labels: {', '.join(task.choices)})", "variant", kind)


def check_model(config: StudyConfig, where: _StudyFile | None = None) -> Path | None:
    """The base model exists (nothing is loaded or built); its folder when already on disk."""
    where = where or _StudyFile(config)
    try:
        return models.check(config.base_model)
    except TraitmapError as error:
        raise where.moved(error, "base_model") from None


def check_splits(config: StudyConfig, data_dir: Path | None, used: dict[str, tasks.Task],
                 where: _StudyFile | None = None) -> None:
    """Read every row the plan reads: each source's train split (with its variant and
    sample) and each target's test split. Errors name the data file and line."""
    where = where or _StudyFile(config)
    for name, task in used.items():
        if data_dir is None and isinstance(task.data, data.DataSpec) and task.data.hub is None:
            raise TraitmapError("this task has no [data.hub] table, so it cannot be read from the hub: "
                                "pass --data-dir with its files", file=task.file, field="data.hub")
    train_rows: dict[str, list] = {}
    for source in config.sources:
        task = used[source.task]
        if source.task not in train_rows:
            train_rows[source.task] = task.examples("train", data_dir, seed=config.seed)
        examples = train_rows[source.task]
        try:
            if source.variant:
                examples = data.apply_variant(examples, source.variant, task, config.seed)
            if config.train.examples is not None:
                examples = data.subsample(examples, config.train.examples, config.seed)
        except TraitmapError as error:
            raise where.error(f"source '{source.name}': {error.message}", "variant" if source.variant else "sources",
                              source.task) from None
        if not examples:
            raise where.error(f"source '{source.name}' has no training examples left after its variant",
                              "sources", source.task)
    for target in config.targets:
        plan.target_examples(config, target, data_dir)


def check_out_dir(config: StudyConfig, out_dir: Path) -> None:
    """The output folder can be written, and if it holds a study, it is this study's:
    the settings its finished work depends on are the same."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TraitmapError("is a file, not a folder: choose another --out", file=out_dir)
    if not out_dir.exists():
        parent = out_dir.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise TraitmapError(f"cannot create the output folder: {parent} is a file, not a folder", file=out_dir)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise TraitmapError(f"cannot create the output folder: {parent} is not writable", file=out_dir)
        return
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise TraitmapError("the output folder is not writable", file=out_dir)
    saved_path = out_dir / plan.CONFIG_FILE
    if not saved_path.exists() and not (out_dir / plan.DB_FILE).exists():
        if any(entry.name != LOCK_FILE for entry in out_dir.iterdir()):
            raise TraitmapError("not empty and not a traitmap output directory: use a new or empty folder for --out",
                                file=out_dir)
        return
    saved = plan.read_saved(out_dir)
    plan.saved_config(out_dir, saved)
    _check_database(out_dir / plan.DB_FILE)
    current = config.to_dict()
    for key in plan.FROZEN_KEYS:
        if saved["config"].get(key) != current.get(key):
            changes = "; ".join(f"{name} {old} → {new}" for name, old, new in
                                changed_keys(saved["config"].get(key), current.get(key), key))
            raise TraitmapError(
                f"this output directory holds a study run with a different '{key}' ({changes}); "
                "use a new --out directory",
                file=saved_path, field=key,
            )
    old_sources = {s["name"]: s for s in saved["config"].get("sources", []) if isinstance(s, dict) and "name" in s}
    for s in current["sources"]:
        if s["name"] in old_sources and old_sources[s["name"]] != s:
            raise TraitmapError(
                f"source '{s['name']}' was defined differently in the finished run; rename it or use a new --out",
                file=saved_path, field="sources",
            )


def changed_keys(old, new, name: str) -> list[tuple[str, str, str]]:
    """(dotted key, old value, new value) for every setting that differs between two configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [change for key in sorted(set(old) | set(new), key=list({**old, **new}).index)
                for change in changed_keys(old.get(key), new.get(key), f"{name}.{key}")]
    return [] if old == new else [(name, json.dumps(old), json.dumps(new))]


def _check_database(path: Path) -> None:
    """An existing traitmap.sqlite opens as a database (read-only here)."""
    if not path.exists():
        return
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            db.execute("SELECT name FROM sqlite_master").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as error:
        raise TraitmapError(f"not a traitmap database ({error}): the output folder is damaged; use another --out",
                            file=path) from None
