"""Validate a whole study before anything is written.

`validate_study` reads everything the plan will read and checks it the way a user can
fix it: the study file (already parsed by `config.load`), every task file, the base
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

from traitmap import data, models, plan, sandbox, tasks
from traitmap.errors import TraitmapError
from traitmap.store import LOCK_FILE
from traitmap.config import StudyConfig, line_of, line_of_value


def validate_study(config: StudyConfig, data_dir: Path | None, out_dir: Path | None = None,
                   retrain: tuple[str, ...] = ()) -> None:
    """Everything a run of `config` reads, checked before the output folder is created or
    touched; `retrain` names adapters the run trains again, whatever their files hold."""
    where = _StudyFile(config)
    check_backend(config, where)
    used = check_tasks(config, where)
    check_code_execution(config, used, where)
    model_dir = check_model(config, where)
    try:
        tokenizer = None if model_dir is None else models.load_tokenizer(model_dir)  # the tokenizer files only
    except TraitmapError as error:
        raise where.moved(error, "base_model") from None
    if tokenizer is not None:
        for task in used.values():
            task.check_tokens(tokenizer)
    training = check_splits(config, data_dir, used, where)
    check_truncation(config, training, tokenizer, where)
    check_retrain(config, retrain)
    if out_dir is not None:
        check_out_dir(config, Path(out_dir), retrain)


class _StudyFile:
    """Names the study file's line for an error about a value in it."""

    def __init__(self, config: StudyConfig):
        self.path = config.path or "<study>"
        try:
            self.text = Path(config.path).read_text(encoding="utf-8-sig") if config.path else ""
        except (OSError, UnicodeDecodeError):
            self.text = ""

    def error(self, message: str, key: str, value: str | None = None) -> TraitmapError:
        line = line_of_value(self.text, key, value) if value is not None else line_of(self.text, key)
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


def check_backend(config: StudyConfig, where: _StudyFile | None = None) -> None:
    """The backend can be imported and its constructor takes the study's backend_args
    (from [eval] backend_args or --backend-arg)."""
    from traitmap import backends

    where = where or _StudyFile(config)
    try:
        backends.check_args(config.eval.backend, config.eval.backend_args)
    except TraitmapError as error:
        raise where.moved(error, error.field or "eval.backend") from None


def check_code_execution(config: StudyConfig, used: dict[str, tasks.Task], where: _StudyFile | None = None) -> None:
    """Targets that run model-written code (pass@1) find a working sandbox, unless the
    study opted in to running that code unsandboxed."""
    code_targets = [t for t in config.targets if used[t].metric == "pass@1"]
    if not code_targets or config.eval.code_execution == sandbox.UNSANDBOXED:
        return
    try:
        sandbox.check_sandbox()
    except TraitmapError as error:
        raise (where or _StudyFile(config)).error(f"target '{code_targets[0]}': {error.message}", "targets",
                                                  code_targets[0]) from None


def _check_variant_fits(source, task: tasks.Task, where: _StudyFile) -> None:
    kind = source.variant["kind"]
    if data.VARIANTS[kind].choice_only and task.kind != "choice":
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
                 where: _StudyFile | None = None) -> dict[str, list]:
    """Read every row the plan reads: each source's train split (with its variant, sample
    and validation slice) and each target's test split. Errors name the data file and line.
    Returns each source's training examples (at the study's first seed)."""
    where = where or _StudyFile(config)
    for name, task in used.items():
        if data_dir is None and isinstance(task.data, data.DataSpec) and task.data.hub is None:
            raise TraitmapError("this task has no [data.hub] table, so it cannot be read from the hub: "
                                "pass --data-dir with its files", file=task.file, field="data.hub")
    evaluated = {plan.text_of(ex) for target in config.targets for ex in plan.target_examples(config, target, data_dir)}
    train_rows: dict[str, list] = {}
    training: dict[str, list] = {}
    for source in config.sources:
        task = used[source.task]
        if source.task not in train_rows:
            train_rows[source.task] = task.examples("train", data_dir, seed=config.seed)
        try:
            examples, validation = plan.split_source(train_rows[source.task], config, source, task, config.seed,
                                                     evaluated)
        except TraitmapError as error:
            raise where.error(f"source '{source.name}': {error.message}", "variant" if source.variant else "sources",
                              source.task) from None
        if not examples:
            if validation:
                raise where.error(f"source '{source.name}' has {len(validation)} examples, all of them taken by the "
                                  "validation slice: lower validation_examples", "train.validation_examples")
            raise where.error(f"source '{source.name}' has no training examples left after its variant",
                              "sources", source.task)
        if config.train.validation_examples and not validation:
            raise where.error(f"source '{source.name}' has no example left for its validation slice: every text of "
                              "its training split is also evaluated by a target", "train.validation_examples")
        training[source.name] = examples
    return training


TRUNCATION_SAMPLE = 2000


def check_truncation(config: StudyConfig, training: dict[str, list], tokenizer, where: _StudyFile | None = None) -> None:
    """No source loses the whole answer of more than `ANSWER_LOSS_LIMIT` of its training
    examples at `max_length` (it would train on prompts alone). Counted with the base
    model's tokenizer, else at about 4 characters per token, on a seeded sample of at most
    `TRUNCATION_SAMPLE` examples (a whole split of the paper preset takes long to tokenize)."""
    from traitmap.config import ANSWER_LOSS_LIMIT
    from traitmap.train import PROMPT_FLOOR, example_lengths, resolve_max_length, truncation

    where = where or _StudyFile(config)
    for name, examples in training.items():
        examples = data.subsample(examples, TRUNCATION_SAMPLE, config.seed)
        if tokenizer is not None:
            lengths = example_lengths(tokenizer, examples)
        else:
            lengths = [(1 + len(ex.prompt) // 4, 2 + len(ex.target) // 4) for ex in examples]
        max_length = resolve_max_length(config.train, lengths)
        lost = truncation(lengths, max_length)["share_answer_lost"]
        if lost > ANSWER_LOSS_LIMIT:
            whole = max(answer for _, answer in lengths) + PROMPT_FLOOR
            raise where.error(f"source '{name}' loses its whole answer in {lost:.0%} of its training examples at "
                              f"max_length = {max_length} (the limit is {ANSWER_LOSS_LIMIT:.0%}): "
                              f"max_length = {whole} keeps every answer", "train.max_length")


def check_retrain(config: StudyConfig, retrain: tuple[str, ...]) -> None:
    """Every adapter named to be trained again is one of the study's sources."""
    names = [s.name for s in config.sources]
    for name in retrain:
        if name not in names:
            raise TraitmapError(f"'{name}' is not a source of study '{config.name}' (its sources: {', '.join(names)})",
                                field="--retrain")


def check_out_dir(config: StudyConfig, out_dir: Path, retrain: tuple[str, ...] = ()) -> None:
    """The output folder can be written, and if it holds a study, it is this study's:
    the settings its finished work depends on are the same, and its trained adapters'
    files are whole (except those in `retrain`, which the run trains again)."""
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
    _check_database(out_dir / plan.DB_FILE)
    current = config.to_dict()
    recorded = plan.saved_config(out_dir, saved).to_dict()  # settings added since it ran: its preset's values
    for key in plan.FROZEN_KEYS:
        if plan.frozen_value(recorded, key) != plan.frozen_value(current, key):
            changes = "; ".join(f"{name} {old} → {new}" for name, old, new in
                                changed_keys(plan.frozen_value(recorded, key), plan.frozen_value(current, key), key))
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
    _check_adapters(config, out_dir, skip=retrain)


def _check_adapters(config: StudyConfig, out_dir: Path, skip: tuple[str, ...]) -> None:
    """Each adapter the store records for this study, where its folder is there, has a
    readable PEFT config and safetensors file (header and size), so that a damaged one
    is named now rather than when a cell loads it."""
    path = out_dir / plan.DB_FILE
    if not path.exists():
        return
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT name, seed, path FROM adapters").fetchall()
    except sqlite3.DatabaseError:
        return  # a store from before adapters were recorded holds none
    finally:
        db.close()
    sources = {s.name for s in config.sources} - set(skip)
    for name, seed, stored in rows:
        folder = out_dir / stored if (out_dir / stored).exists() else Path(stored)
        if name not in sources or not folder.is_dir():
            continue
        problem = adapter_problem(folder)
        if problem is not None:
            file, why = problem
            raise TraitmapError(f"adapter '{name}' (seed {seed}) is damaged ({why}): rerun with `--retrain {name}` to "
                                "train it again and evaluate its cells again; the rest of the study is kept",
                                file=folder / file)


def adapter_problem(folder: Path) -> tuple[str, str] | None:
    """(file, what is wrong) for an adapter folder that cannot load; None when it can."""
    import json

    from safetensors import SafetensorError, safe_open

    config = folder / "adapter_config.json"
    try:
        settings = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return config.name, "missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return config.name, f"not readable JSON: {error}"
    if not isinstance(settings, dict) or "peft_type" not in settings:
        return config.name, "not a PEFT adapter config (no peft_type)"
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        return weights.name, "missing"
    try:
        with safe_open(weights, framework="numpy") as handle:
            handle.keys()
    except (OSError, SafetensorError) as error:
        return weights.name, f"not a whole safetensors file: {error}"
    return None


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
