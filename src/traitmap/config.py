"""The study file (TOML) -> a validated, resolved `StudyConfig` (plan.py turns it into work).

A study says which base model, which sources (one LoRA adapter each, optionally a
variant such as `mislabel`), which targets, and the training and evaluation budgets.
Validation happens here, once, so that later steps can trust the config: every mistake
is reported as a TraitmapError naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from traitmap.errors import TraitmapError
from traitmap.metrics import CHOICE_METRICS, DEFAULT_METRIC
from traitmap.trainers import TRAINERS

# Training presets. "cpu" is sized for a laptop and a few minutes per adapter; "paper"
# mirrors the authors' released code (docs/paper.md, "The authors' setup").
PRESETS: dict[str, dict] = {
    "cpu": dict(
        r=8, alpha=16, dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lr=1e-3, scheduler="cosine", warmup_steps=2, weight_decay=0.0, max_grad_norm=1.0,
        batch_size=4, grad_accum=1, steps=16, epochs=None, examples=64, max_length=192,
        # auto: bf16 autocast where the machine has bf16 units (AMX, AVX512-BF16, GPUs), else
        # fp32 (an AVX2-only CPU emulates bf16 about 30x slower than fp32).
        loss_on="answer", precision="auto", trainer="peft",
        max_steps=None, patience=4, min_delta=0.01, eval_every=8, validation_examples=0, max_length_cap=512,
    ),
    "paper": dict(
        r=64, alpha=32, dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lr=5e-5, scheduler="cosine", warmup_steps=100, weight_decay=0.0, max_grad_norm=1.0,
        batch_size=16, grad_accum=4, steps=None, epochs=1, examples=None, max_length=2048,
        loss_on="answer", precision="auto", trainer="peft",
        max_steps=None, patience=4, min_delta=0.01, eval_every=50, validation_examples=0, max_length_cap=4096,
    ),
}

AUTO = "auto"
# A plan in which a source loses the whole answer of more than this share of its training
# examples at `max_length` is refused (validate.py): it would train on prompts alone.
ANSWER_LOSS_LIMIT = 0.05
# Held-out examples per source when `steps = "auto"` and `validation_examples` is not set.
DEFAULT_VALIDATION_EXAMPLES = 64


@dataclass(frozen=True)
class TrainConfig:
    preset: str
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]
    lr: float
    scheduler: str
    warmup_steps: int
    weight_decay: float
    max_grad_norm: float
    batch_size: int
    grad_accum: int
    steps: int | str | None   # a number, "auto" (until validation loss stops improving) or None (epochs)
    epochs: int | None
    examples: int | None
    max_length: int | str     # tokens per example, or "auto" (per source, from its lengths)
    loss_on: str
    precision: str
    trainer: str = "peft"
    max_steps: int | None = None       # the most steps "auto" may take
    patience: int = 4                  # validations without an improvement of min_delta before "auto" stops
    min_delta: float = 0.01
    eval_every: int = 8                # steps between validation losses
    validation_examples: int = 0       # held out of each source's training split
    max_length_cap: int = 512          # the longest "auto" max_length

    @property
    def auto_steps(self) -> bool:
        return self.steps == AUTO

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps for one adapter: `steps`, `max_steps` when "auto" (it may stop
        earlier), or `epochs` over `n_examples`."""
        if self.auto_steps:
            return self.max_steps
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * n_examples / (self.batch_size * self.grad_accum)))


@dataclass(frozen=True)
class EvalConfig:
    examples: int | None = 50
    limits: dict[str, int] = field(default_factory=dict)
    batch_size: int = 16
    max_new_tokens: dict[str, int] = field(default_factory=dict)
    backend: str = "auto"
    backend_args: dict = field(default_factory=dict)  # the backend's own constructor arguments
    # How model-written code runs: "sandboxed" (bubblewrap) or "unsandboxed" (an explicit
    # opt-in). Where the results were computed, not what they are: a rerun may change it.
    code_execution: str = "sandboxed"

    def limit_for(self, task: str) -> int | None:
        return self.limits.get(task, self.examples)


@dataclass(frozen=True)
class RunConfig:
    """Where the jobs run (`[run]`): not part of the results, so it may change between runs."""

    executor: str = "local"
    address: str | None = None  # the Ray cluster to join; none: $RAY_ADDRESS, else a local cluster
    connect_timeout: float = 30.0  # seconds to reach the cluster before the run gives up, writing nothing

    @property
    def executor_options(self) -> dict:
        """The executor's constructor arguments this table holds: a Ray cluster's address and
        how long to try reaching it."""
        return {"address": self.address, "connect_timeout": self.connect_timeout} if self.executor == "ray" else {}


def where_to_run(run: RunConfig, executor: str | None = None, address: str | None = None) -> RunConfig:
    """`run` with an executor and an address given over it (the [run] table's over the defaults,
    --executor and --address over the table). An address means a Ray cluster, so it implies the
    ray executor; another executor given alone drops `run`'s address. Errors name the field
    ("executor" or "address")."""
    from traitmap import executors

    if executor is not None and executor not in executors.names():
        raise TraitmapError(f"unknown executor '{executor}' (choose from {', '.join(executors.names())})",
                            field="executor")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise TraitmapError("must be a cluster address such as \"10.0.0.5:6379\" or \"auto\"", field="address")
    if address is not None and executor not in (None, "ray"):
        raise TraitmapError(f"an address is for the ray executor, not '{executor}': remove the address or choose "
                            "the ray executor", field="address")
    if address is not None:
        return dataclasses.replace(run, executor="ray", address=address)
    if executor is not None:
        return dataclasses.replace(run, executor=executor, address=run.address if executor == "ray" else None)
    return run


@dataclass(frozen=True)
class Source:
    """One adapter to train: a task's training split, optionally transformed by a variant."""

    name: str
    task: str
    variant: dict | None = None


@dataclass(frozen=True)
class StudyConfig:
    name: str
    base_model: str
    sources: list[Source]
    targets: list[str]
    seeds: list[int]
    train: TrainConfig
    eval: EvalConfig
    data_dir: str | None = None
    task_dirs: list[str] = field(default_factory=list)
    analysis: dict = field(default_factory=dict)
    run: RunConfig = field(default_factory=RunConfig)
    path: str | None = None

    @property
    def seed(self) -> int:
        return self.seeds[0]

    @property
    def metric(self) -> str:
        """What the matrix holds on choice targets (`[analysis] metric`); generate targets keep their own."""
        return self.analysis.get("metric", DEFAULT_METRIC)

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise TraitmapError(f"no source named '{name}' in study '{self.name}'")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "StudyConfig":
        d = dict(d)
        d["sources"] = [Source(**s) for s in d["sources"]]
        preset = PRESETS.get(d["train"].get("preset"), {})  # settings added since the study ran: the preset's
        d["train"] = TrainConfig(**{**{k: v for k, v in preset.items() if k not in d["train"]}, **d["train"]})
        d["eval"] = EvalConfig(**d["eval"])
        d["run"] = RunConfig(**d.get("run", {}))  # absent from output dirs written before [run] existed
        return cls(**d)


TOP_KEYS = {"name", "base_model", "sources", "targets", "seeds", "train", "eval", "data_dir", "task_dirs", "analysis", "run"}
EVAL_KEYS = {f.name for f in dataclasses.fields(EvalConfig)}
RUN_KEYS = {f.name for f in dataclasses.fields(RunConfig)}


def line_of(text: str, key: str) -> int | None:
    """Best-effort line number of `key = ...` in a TOML text, for error messages.

    A dotted key (`eval.examples`) is looked up inside its `[eval]` table first, so that
    a name used in two tables points at the right one; else the table's own line.
    """
    *table, name = key.split(".")
    lines = text.splitlines()

    def find(name: str, start: int = 0, stop_at_table: bool = False) -> int | None:
        for i in range(start, len(lines)):
            line = lines[i]
            if stop_at_table and i > start and re.match(r"\s*\[", line):
                return None
            if re.match(rf"\s*{re.escape(name)}\s*=", line) or re.match(rf"\s*\[+\s*{re.escape(name)}\s*\]+", line):
                return i + 1
        for i in range(start, len(lines)):  # inside an inline table: `x = {name = ...}`
            if re.search(rf"[{{,]\s*{re.escape(name)}\s*=", lines[i]):
                return i + 1
        return None

    if table:
        header = find(".".join(table))
        if header is not None:
            return find(name, header - 1, stop_at_table=True) or header
    return find(name)


def line_of_value(text: str, key: str, value: str) -> int | None:
    """Line of a quoted `value` at or after the line of `key` (a task name inside
    `sources = [...]` or a `[[sources]]` table), else the key's own line."""
    start = line_of(text, key) or 1
    quoted = re.compile(rf"""(["']){re.escape(value)}\1""")
    for number, line in enumerate(text.splitlines()[start - 1:], start=start):
        if quoted.search(line.split("#", 1)[0]):
            return number
    return line_of(text, key)


def load(path: str | os.PathLike) -> StudyConfig:
    """Read and validate a study file. Task names are checked later, against the registry."""
    from traitmap.data import read_text

    path = Path(path)
    text = read_text(path, "study file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TraitmapError(f"not valid TOML: {e}", file=path) from None
    return parse(raw, path=path, text=text)


def parse(raw: dict, *, path: Path | None = None, text: str = "") -> StudyConfig:
    def fail(msg: str, key: str) -> TraitmapError:
        return TraitmapError(msg, file=path or "<study>", line=line_of(text, key), field=key)

    unknown = set(raw) - TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        near = difflib.get_close_matches(k, sorted(TOP_KEYS - set(raw)), n=1)
        raise fail((f"unknown key: did you mean {near[0]}?" if near else "unknown key")
                   + f" (expected one of {', '.join(sorted(TOP_KEYS))})", k)
    for key in ("name", "base_model", "sources", "targets"):
        if key not in raw:
            raise fail("missing required key", key)
    for key in ("train", "eval", "analysis"):
        if not isinstance(raw.get(key, {}), dict):
            raise fail(f"must be a table: write [{key}] on its own line, then its keys", key)
    if not isinstance(raw["name"], str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", raw["name"]):
        raise fail("must be a simple name (letters, digits, '-', '_', '.')", "name")
    if not isinstance(raw["base_model"], str) or not raw["base_model"].strip():
        raise fail("must be a model name, a Hugging Face id or a folder, as a string", "base_model")
    if "data_dir" in raw and (not isinstance(raw["data_dir"], str) or not raw["data_dir"]):
        raise fail("must be a folder (a string), or \"hub\"", "data_dir")
    task_dirs = raw.get("task_dirs", [])
    if not _is_list_of(task_dirs, str):
        raise fail('must be a list of folders, e.g. task_dirs = ["my_tasks"]', "task_dirs")

    sources = _parse_sources(raw["sources"], fail)
    targets = raw["targets"]
    if not _is_list_of(targets, str) or not targets:
        raise fail('must be a non-empty list of task names, e.g. targets = ["imdb"]', "targets")
    if len(set(targets)) != len(targets):
        raise fail("a target is listed twice", "targets")

    seeds = raw.get("seeds", [0])
    if not _is_list_of(seeds, int) or not seeds or any(x < 0 for x in seeds):
        raise fail("must be a non-empty list of non-negative integers", "seeds")
    if len(set(seeds)) != len(seeds):
        raise fail("a seed is listed twice", "seeds")

    train = _parse_train(raw, fail)
    ev = _parse_eval(raw, targets, fail)
    analysis = dict(raw.get("analysis", {}))
    _check_analysis(analysis, targets, fail)
    run = _parse_run(raw, fail)
    return StudyConfig(
        name=raw["name"], base_model=raw["base_model"], sources=sources, targets=list(targets),
        seeds=list(seeds), train=train, eval=ev, data_dir=_beside(raw.get("data_dir"), path),
        task_dirs=[str((path.parent if path else Path(".")) / d) for d in task_dirs],
        analysis=analysis, run=run, path=str(path) if path else None,
    )


def _parse_train(raw: dict, fail) -> TrainConfig:
    """The [train] table over its preset."""
    train_raw = dict(raw.get("train", {}))
    preset = train_raw.pop("preset", "cpu")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise fail(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})", "train.preset")
    values = dict(PRESETS[preset])
    for k, v in train_raw.items():
        if k not in values:
            raise fail(f"unknown training option (expected one of {', '.join(sorted(values))})", f"train.{k}")
        values[k] = v
    # Setting one of steps / epochs replaces the preset's choice; setting both is an error.
    if "max_steps" in train_raw and "steps" not in train_raw:  # a limit on steps means training until it stops
        values["steps"] = train_raw["steps"] = AUTO
    if "steps" in train_raw and "epochs" not in train_raw:
        values["epochs"] = None
    elif "epochs" in train_raw and "steps" not in train_raw:
        values["steps"] = None
    if values.get("examples") == "all":
        values["examples"] = None
    if values.get("steps") == AUTO and "validation_examples" not in train_raw:
        values["validation_examples"] = DEFAULT_VALIDATION_EXAMPLES
    if values.get("steps") == AUTO and "scheduler" not in train_raw:
        values["scheduler"] = "constant_with_warmup"  # no decay to zero at an arbitrary step
    train = TrainConfig(preset=preset, **values)
    _check_train(train, fail)
    return train


def _parse_eval(raw: dict, targets: list[str], fail) -> EvalConfig:
    """The [eval] table: its keys, the backend and its arguments, per-target limits."""
    eval_raw = raw.get("eval", {})
    bad = set(eval_raw) - EVAL_KEYS
    if bad:
        raise fail(f"unknown evaluation option (expected one of {', '.join(sorted(EVAL_KEYS))})", f"eval.{sorted(bad)[0]}")
    if eval_raw.get("examples") == "all":  # TOML has no null: "all" means the whole split
        eval_raw = {**eval_raw, "examples": None}
    ev = EvalConfig(**eval_raw)
    if ev.examples is not None and not _positive_int(ev.examples):
        raise fail('must be a positive integer or "all"', "eval.examples")
    if not _positive_int(ev.batch_size):
        raise fail("must be a positive integer", "eval.batch_size")
    from traitmap import backends

    if ev.backend not in backends.names():
        raise fail(f"unknown backend '{ev.backend}' (choose from {', '.join(backends.names())})", "eval.backend")
    if not isinstance(ev.backend_args, dict):
        raise fail("must be a table of the backend's arguments, e.g. backend_args = {max_loras = 8}",
                   "eval.backend_args")
    from traitmap.sandbox import CODE_EXECUTION

    if ev.code_execution not in CODE_EXECUTION:
        raise fail(f"must be one of {', '.join(repr(v) for v in CODE_EXECUTION)}, got {ev.code_execution!r}",
                   "eval.code_execution")
    for key in ("limits", "max_new_tokens"):
        table = getattr(ev, key)
        if not isinstance(table, dict) or not all(_positive_int(v) for v in table.values()):
            raise fail("must be a table of task name = positive integer", f"eval.{key}")
        unknown_target = sorted(set(table) - set(targets))
        if unknown_target:
            raise fail(f"'{unknown_target[0]}' is not one of the targets ({', '.join(targets)})", f"eval.{key}")
    return ev


def _parse_run(raw: dict, fail) -> RunConfig:
    """The [run] table: where jobs run (`where_to_run`)."""
    run_raw = raw.get("run", {})
    if not isinstance(run_raw, dict):
        raise fail("must be a table", "run")
    bad = set(run_raw) - RUN_KEYS
    if bad:
        raise fail(f"unknown run option (expected one of {', '.join(sorted(RUN_KEYS))})", f"run.{sorted(bad)[0]}")
    try:
        run = where_to_run(RunConfig(**{k: v for k, v in run_raw.items() if k not in ("executor", "address")}),
                           run_raw.get("executor"), run_raw.get("address"))
    except TraitmapError as e:
        raise fail(e.message, f"run.{e.field}") from None
    if not (_number(run.connect_timeout) and run.connect_timeout > 0):
        raise fail(f"must be a positive number of seconds, got {run.connect_timeout!r}", "run.connect_timeout")
    return run


def _beside(data_dir: str | None, path: Path | None) -> str | None:
    """A relative data_dir is relative to the study file's folder, like task_dirs."""
    if not data_dir or data_dir == HUB or path is None or Path(data_dir).expanduser().is_absolute():
        return data_dir
    return str(path.parent / data_dir)


def _is_list_of(value, kind: type) -> bool:
    """A TOML array whose items are all `kind` (a bool is not an int here)."""
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _parse_sources(raw_sources, fail) -> list[Source]:
    if not isinstance(raw_sources, list):
        raise fail('must be a list of task names or tables, e.g. sources = ["imdb"] (not a single string)', "sources")
    if not raw_sources:
        raise fail("a study needs at least one source", "sources")
    sources = []
    for i, s in enumerate(raw_sources):
        if isinstance(s, str):
            s = {"task": s}
        if not isinstance(s, dict) or "task" not in s:
            raise fail(f"source #{i + 1} must be a task name or a table with 'task'", "sources")
        extra = set(s) - {"task", "name", "variant"}
        if extra:
            raise fail(f"source #{i + 1}: unknown key '{sorted(extra)[0]}'", "sources")
        if not isinstance(s["task"], str) or not s["task"]:
            raise fail(f"source #{i + 1}: 'task' must be a task name (a string)", "sources")
        if "name" in s and (not isinstance(s["name"], str) or not s["name"]):
            raise fail(f"source #{i + 1}: 'name' must be a string", "sources")
        variant = s.get("variant")
        if variant is not None and (not isinstance(variant, dict) or "kind" not in variant):
            raise fail(f"source #{i + 1}: variant must be a table with 'kind'", "variant")
        if variant is not None:
            _check_variant(variant, i, fail)
        name = s.get("name") or (s["task"] if variant is None else f"{s['task']}@{variant['kind']}")
        if name == "base" or not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
            raise fail(f"source #{i + 1}: '{name}' is not a usable adapter name", "sources")
        sources.append(Source(name=name, task=s["task"], variant=variant))
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise fail(f"two sources are both named '{dupes[0]}': give one a 'name'", "sources")
    return sources


def _check_variant(variant: dict, i: int, fail) -> None:
    """A known variant kind with its parameters, checked here rather than at training time."""
    from traitmap.data import VARIANTS

    kind = variant["kind"]
    if not isinstance(kind, str) or kind not in VARIANTS:
        raise fail(f"source #{i + 1}: unknown variant kind {kind!r} (choose from {', '.join(VARIANTS)})", "variant")
    required, optional = VARIANTS[kind].required, VARIANTS[kind].optional
    params = set(variant) - {"kind"}
    if required - params or params - required - optional:
        raise fail(f"source #{i + 1}: variant '{kind}' takes {sorted(required)} (required) and {sorted(optional)} "
                   f"(optional), got {sorted(params)}", "variant")
    where = f"source #{i + 1}: variant '{kind}'"
    if "fraction" in variant and not (_number(variant["fraction"]) and 0 <= variant["fraction"] <= 1):
        raise fail(f"{where}: fraction must be a number from 0 to 1, got {variant['fraction']!r}", "variant")
    for key in ("n", "max_chars"):
        if key in variant and not _positive_int(variant[key]):
            raise fail(f"{where}: {key} must be a positive integer, got {variant[key]!r}", "variant")
    if "ratio" in variant:
        ratio = variant["ratio"]
        if (not isinstance(ratio, dict) or not ratio or not all(_number(v) and v >= 0 for v in ratio.values())
                or abs(sum(ratio.values()) - 1) > 1e-6):
            raise fail(f"{where}: ratio must be a table of label = share, shares >= 0 summing to 1, got {ratio!r}",
                       "variant")


SCHEDULERS = ("cosine", "linear", "constant", "constant_with_warmup")


def _check_train(t: TrainConfig, fail) -> None:
    positive_ints = ["r", "alpha", "batch_size", "grad_accum", "patience", "eval_every", "max_length_cap"]
    for k in positive_ints:
        if not _positive_int(getattr(t, k)):
            raise fail("must be a positive integer", f"train.{k}")
    if t.max_length != AUTO and not _positive_int(t.max_length):
        raise fail('must be a positive integer or "auto"', "train.max_length")
    for k in ("steps", "epochs", "examples"):
        v = getattr(t, k)
        if v is not None and not _positive_int(v) and not (k == "steps" and v == AUTO):
            raise fail("must be a positive integer" + {"examples": ' or "all"', "steps": ' or "auto"'}.get(k, ""),
                       f"train.{k}")
    if (t.steps is None) == (t.epochs is None):
        raise fail("set exactly one of 'steps' and 'epochs'", "train.steps")
    if t.auto_steps and not _positive_int(t.max_steps):
        raise fail('steps = "auto" needs max_steps, the most steps it may take (a positive integer)', "train.max_steps")
    if t.max_steps is not None and not t.auto_steps:
        raise fail('max_steps is for steps = "auto": remove it or set steps = "auto"', "train.max_steps")
    if not (isinstance(t.validation_examples, int) and not isinstance(t.validation_examples, bool)
            and t.validation_examples >= 0):
        raise fail("must be a non-negative integer", "train.validation_examples")
    if t.auto_steps and t.validation_examples == 0:
        raise fail('steps = "auto" stops on the validation loss: validation_examples must be at least 1',
                   "train.validation_examples")
    if not (_number(t.min_delta) and t.min_delta >= 0):
        raise fail("must be a non-negative number", "train.min_delta")
    if not (_number(t.lr) and 0 < t.lr < 1):
        raise fail("must be a number between 0 and 1", "train.lr")
    if not (_number(t.dropout) and 0 <= t.dropout < 1):
        raise fail("must be in [0, 1)", "train.dropout")
    if not (isinstance(t.warmup_steps, int) and not isinstance(t.warmup_steps, bool) and t.warmup_steps >= 0):
        raise fail("must be a non-negative integer", "train.warmup_steps")
    if not (_number(t.weight_decay) and t.weight_decay >= 0):
        raise fail("must be a non-negative number", "train.weight_decay")
    if not (_number(t.max_grad_norm) and t.max_grad_norm > 0):
        raise fail("must be a positive number", "train.max_grad_norm")
    if t.loss_on not in ("answer", "all"):
        raise fail("must be 'answer' or 'all'", "train.loss_on")
    if t.precision not in ("auto", "bf16", "fp32"):
        raise fail("must be 'auto', 'bf16' or 'fp32'", "train.precision")
    if t.trainer not in TRAINERS:
        raise fail(f"unknown trainer '{t.trainer}' (choose from {', '.join(TRAINERS)})", "train.trainer")
    if t.scheduler not in SCHEDULERS:
        raise fail(f"must be one of {', '.join(repr(s) for s in SCHEDULERS)}", "train.scheduler")
    if not _is_list_of(t.target_modules, str) or not t.target_modules:
        raise fail('must be a non-empty list of module names, e.g. ["q_proj", "v_proj"]', "train.target_modules")


# [analysis]: every setting an analysis reads, with what it must be. An analysis reads
# these without checking again, so a bad value is refused here, before anything runs.
def _choice(*allowed):
    return (lambda v: isinstance(v, str) and v in allowed), "one of " + ", ".join(f'"{a}"' for a in allowed)


_POSITIVE_INT = (_positive_int, "a positive integer")
_SEED = ((lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0), "a non-negative integer")
_BOOL = ((lambda v: isinstance(v, bool)), "true or false")
ANALYSIS_SETTINGS = {
    "n_components": _POSITIVE_INT,
    "pca_on": _choice("gains", "scores"),
    "standardize": _BOOL,
    "n_boot": _POSITIVE_INT,
    "ci_level": ((lambda v: _number(v) and 0 < v < 1), "a number between 0 and 1"),
    "bootstrap_seed": _SEED,
    "seed": _SEED,
    "trait_n_boot": _POSITIVE_INT,
    "trait_align": _choice("procrustes", "sign"),
    "trait_names": ((lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values())),
                    'a table of component = name, e.g. { PC0 = "math" }'),
    "dependency_targets": ((lambda v: _is_list_of(v, str)), "a list of target names"),
    "dependency_min_support": _POSITIVE_INT,
    "dependency_bootstrap": _POSITIVE_INT,
    "predict_alpha": ((lambda v: _number(v) and v > 0), "a positive number"),
    "length_measure": _choice("chars", "words"),
    "similarity_max_texts": _POSITIVE_INT,
    "similarity_include_self": _BOOL,
    "similarity_permutations": _POSITIVE_INT,
    "similarity_permute": _choice("targets", "sources", "both"),
    "metric": _choice(*CHOICE_METRICS),
}


def _check_analysis(analysis: dict, targets: list[str], fail) -> None:
    for key, value in analysis.items():
        if key not in ANALYSIS_SETTINGS:
            raise fail(f"unknown analysis setting (expected one of {', '.join(sorted(ANALYSIS_SETTINGS))})",
                       f"analysis.{key}")
        check, what = ANALYSIS_SETTINGS[key]
        if not check(value):
            raise fail(f"must be {what}, got {value!r}", f"analysis.{key}")
    unknown = sorted(set(analysis.get("dependency_targets", [])) - set(targets))
    if unknown:
        raise fail(f"'{unknown[0]}' is not one of the targets ({', '.join(targets)})", "analysis.dependency_targets")


HUB = "hub"


def new_study_text(path: Path, *, model: str, sources: list[str], targets: list[str], data_dir: str | None = None,
                   task_dirs: list[str] = ()) -> str:
    """The commented study file `traitmap init` writes to `path` (templates/study.toml): every
    key explained, the given folders written relative to the file's folder as it reads them."""
    from importlib.resources import files
    from string import Template

    if not sources or not targets:
        raise TraitmapError("--sources and --targets need at least one task name each")
    folder = path.parent.resolve()

    def beside(where: str) -> str:
        if where == "hub" or Path(where).expanduser().is_absolute():
            return where
        return os.path.relpath(Path(where).resolve(), folder)

    def toml_list(items) -> str:
        return ", ".join(f'"{i}"' for i in items)

    dirs = [beside(d) for d in task_dirs]
    template = Template(files("traitmap").joinpath("templates/study.toml").read_text(encoding="utf-8"))
    return template.substitute(
        path=shlex.quote(str(path)), name=re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-") or "study",
        model=model.replace('"', ""), sources=toml_list(sources), targets=toml_list(targets),
        first_target=targets[0] if re.fullmatch(r"[A-Za-z0-9_-]+", targets[0]) else f'"{targets[0]}"',
        task_dirs_line=f"task_dirs = [{toml_list(dirs)}]" if dirs else '# task_dirs = ["my_tasks"]',
        data_dir_line=f'data_dir = "{beside(data_dir)}"' if data_dir else '# data_dir = "/path/to/data"',
    )


def resolve_data_dir(config: StudyConfig, override: str | None = None) -> Path | None:
    """Where task files are read from: --data-dir, then TRAITMAP_DATA_DIR, then the study file.

    The value "hub" means: read every task from its Hugging Face hub id (returns None).
    """
    return choose_data_dir(override, config.data_dir, f"data_dir in {config.path or 'the study file'}",
                           "no data directory: pass --data-dir (a folder, or 'hub' to read from the Hugging Face "
                           "hub), set TRAITMAP_DATA_DIR, or set data_dir in the study file")


def choose_data_dir(override: str | None, study_value: str | None = None, study_origin: str = "",
                    none_given: str = "no data directory: pass --data-dir or set TRAITMAP_DATA_DIR") -> Path | None:
    """The first of --data-dir, TRAITMAP_DATA_DIR and a study's data_dir that is set: a folder
    that must exist, or None for "hub". An error names where the folder came from."""
    chosen, origin = next(((value, origin) for value, origin in (
        (override, "from --data-dir"), (os.environ.get("TRAITMAP_DATA_DIR"), "from TRAITMAP_DATA_DIR"),
        (study_value, f"from {study_origin}")) if value), (None, ""))
    if not chosen:
        raise TraitmapError(none_given)
    if chosen == HUB:
        return None
    p = Path(chosen).expanduser()
    if not p.is_dir():
        raise TraitmapError(f"data directory '{p}' ({origin}) does not exist", field="data_dir")
    return p.resolve()
