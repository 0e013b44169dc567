"""The study file (TOML) -> a validated, resolved `StudyConfig`, and the plan it implies.

A study says which base model, which sources (one LoRA adapter each, optionally a
variant such as `mislabel`), which targets, and the training and evaluation budgets.
Validation happens here, once, so that later steps can trust the config: every mistake
is reported as a TraitmapError naming the file, line and field.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from traitmap.errors import TraitmapError

# Training presets. "cpu" is sized for a laptop and a few minutes per adapter; "paper"
# mirrors the authors' released code (PAPER.md, "What the authors' released code does").
PRESETS: dict[str, dict] = {
    "cpu": dict(
        r=8, alpha=16, dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lr=1e-3, scheduler="cosine", warmup_steps=2, weight_decay=0.0, max_grad_norm=1.0,
        batch_size=4, grad_accum=1, steps=16, epochs=None, examples=64, max_length=192,
        # auto: bf16 autocast where the machine has bf16 units (AMX, AVX512-BF16, GPUs), else
        # fp32 (an AVX2-only CPU emulates bf16 about 30x slower than fp32).
        loss_on="answer", precision="auto", trainer="peft",
    ),
    "paper": dict(
        r=64, alpha=32, dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        lr=5e-5, scheduler="cosine", warmup_steps=100, weight_decay=0.0, max_grad_norm=1.0,
        batch_size=16, grad_accum=4, steps=None, epochs=1, examples=None, max_length=2048,
        loss_on="answer", precision="auto", trainer="peft",
    ),
}


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
    steps: int | None
    epochs: int | None
    examples: int | None
    max_length: int
    loss_on: str
    precision: str
    trainer: str = "peft"

    def total_steps(self, n_examples: int) -> int:
        """Optimizer steps for one adapter: `steps`, or `epochs` over `n_examples`."""
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

    def limit_for(self, task: str) -> int | None:
        return self.limits.get(task, self.examples)


@dataclass(frozen=True)
class RunConfig:
    """Where the jobs run (`[run]`): not part of the results, so it may change between runs."""

    executor: str = "local"
    address: str | None = None  # the Ray cluster to join; none: $RAY_ADDRESS, else a local cluster


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
        d["train"] = TrainConfig(**d["train"])
        d["eval"] = EvalConfig(**d["eval"])
        d["run"] = RunConfig(**d.get("run", {}))  # absent from output dirs written before [run] existed
        return cls(**d)


TOP_KEYS = {"name", "base_model", "sources", "targets", "seeds", "train", "eval", "data_dir", "task_dirs", "analysis", "run"}
EVAL_KEYS = {f.name for f in dataclasses.fields(EvalConfig)}
RUN_KEYS = {f.name for f in dataclasses.fields(RunConfig)}


def _line_of(text: str, key: str) -> int | None:
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


def load(path: str | os.PathLike) -> StudyConfig:
    """Read and validate a study file. Task names are checked later, against the registry."""
    path = Path(path)
    if not path.is_file():
        raise TraitmapError("study file not found", file=path)
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TraitmapError(f"not valid TOML: {e}", file=path) from None
    return parse(raw, path=path, text=text)


def parse(raw: dict, *, path: Path | None = None, text: str = "") -> StudyConfig:
    def fail(msg: str, key: str) -> TraitmapError:
        return TraitmapError(msg, file=path or "<study>", line=_line_of(text, key), field=key)

    unknown = set(raw) - TOP_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise fail(f"unknown key (expected one of {', '.join(sorted(TOP_KEYS))})", k)
    for key in ("name", "base_model", "sources", "targets"):
        if key not in raw:
            raise fail("missing required key", key)
    if not isinstance(raw["name"], str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", raw["name"]):
        raise fail("must be a simple name (letters, digits, '-', '_', '.')", "name")

    sources = []
    for i, s in enumerate(raw["sources"]):
        if isinstance(s, str):
            s = {"task": s}
        if not isinstance(s, dict) or "task" not in s:
            raise fail(f"source #{i + 1} must be a task name or a table with 'task'", "sources")
        extra = set(s) - {"task", "name", "variant"}
        if extra:
            raise fail(f"source #{i + 1}: unknown key '{sorted(extra)[0]}'", "sources")
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
    if not sources:
        raise fail("a study needs at least one source", "sources")

    targets = raw["targets"]
    if not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise fail("must be a non-empty list of task names", "targets")
    if len(set(targets)) != len(targets):
        raise fail("a target is listed twice", "targets")

    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) and x >= 0 for x in seeds):
        raise fail("must be a non-empty list of non-negative integers", "seeds")

    train_raw = dict(raw.get("train", {}))
    preset = train_raw.pop("preset", "cpu")
    if preset not in PRESETS:
        raise fail(f"unknown preset '{preset}' (choose from {', '.join(PRESETS)})", "train.preset")
    values = dict(PRESETS[preset])
    for k, v in train_raw.items():
        if k not in values:
            raise fail(f"unknown training option (expected one of {', '.join(sorted(values))})", f"train.{k}")
        values[k] = v
    # Setting one of steps / epochs replaces the preset's choice; setting both is an error.
    if "steps" in train_raw and "epochs" not in train_raw:
        values["epochs"] = None
    elif "epochs" in train_raw and "steps" not in train_raw:
        values["steps"] = None
    if values.get("examples") == "all":
        values["examples"] = None
    train = TrainConfig(preset=preset, **values)
    _check_train(train, fail)

    eval_raw = raw.get("eval", {})
    bad = set(eval_raw) - EVAL_KEYS
    if bad:
        raise fail(f"unknown evaluation option (expected one of {', '.join(sorted(EVAL_KEYS))})", f"eval.{sorted(bad)[0]}")
    if eval_raw.get("examples") == "all":  # TOML has no null: "all" means the whole split
        eval_raw = {**eval_raw, "examples": None}
    ev = EvalConfig(**eval_raw)
    if ev.examples is not None and (not isinstance(ev.examples, int) or ev.examples < 1):
        raise fail("must be a positive integer", "eval.examples")
    if not isinstance(ev.batch_size, int) or ev.batch_size < 1:
        raise fail("must be a positive integer", "eval.batch_size")
    from traitmap import backends

    if ev.backend not in backends.names():
        raise fail(f"unknown backend '{ev.backend}' (choose from {', '.join(backends.names())})", "eval.backend")
    for key in ("limits", "max_new_tokens"):
        table = getattr(ev, key)
        if not isinstance(table, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in table.values()):
            raise fail("must be a table of task name = positive integer", f"eval.{key}")

    run_raw = raw.get("run", {})
    if not isinstance(run_raw, dict):
        raise fail("must be a table", "run")
    bad = set(run_raw) - RUN_KEYS
    if bad:
        raise fail(f"unknown run option (expected one of {', '.join(sorted(RUN_KEYS))})", f"run.{sorted(bad)[0]}")
    if "address" in run_raw and "executor" not in run_raw:  # an address means a Ray cluster, as --address does
        run_raw = {**run_raw, "executor": "ray"}
    run = RunConfig(**run_raw)
    from traitmap import executors

    if run.executor not in executors.names():
        raise fail(f"unknown executor '{run.executor}' (choose from {', '.join(executors.names())})", "run.executor")
    if run.address is not None and (not isinstance(run.address, str) or not run.address.strip()):
        raise fail("must be a cluster address such as \"10.0.0.5:6379\" or \"auto\"", "run.address")
    if run.address is not None and run.executor != "ray":
        raise fail("an address is for the ray executor: remove it or set executor = \"ray\"", "run.address")

    return StudyConfig(
        name=raw["name"], base_model=str(raw["base_model"]), sources=sources, targets=list(targets),
        seeds=list(seeds), train=train, eval=ev, data_dir=raw.get("data_dir"),
        task_dirs=[str((path.parent if path else Path(".")) / d) for d in raw.get("task_dirs", [])],
        analysis=dict(raw.get("analysis", {})), run=run, path=str(path) if path else None,
    )


def _check_variant(variant: dict, i: int, fail) -> None:
    """A known variant kind with its parameters, checked here rather than at training time."""
    from traitmap.data import _VARIANTS

    kind = variant["kind"]
    if kind not in _VARIANTS:
        raise fail(f"source #{i + 1}: unknown variant kind '{kind}' (choose from {', '.join(_VARIANTS)})", "variant")
    _, required, optional, _ = _VARIANTS[kind]
    params = set(variant) - {"kind"}
    if required - params or params - required - optional:
        raise fail(f"source #{i + 1}: variant '{kind}' takes {sorted(required)} (required) and {sorted(optional)} "
                   f"(optional), got {sorted(params)}", "variant")


def _check_train(t: TrainConfig, fail) -> None:
    positive_ints = ["r", "alpha", "batch_size", "grad_accum", "max_length"]
    for k in positive_ints:
        v = getattr(t, k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise fail("must be a positive integer", f"train.{k}")
    for k in ("steps", "epochs", "examples"):
        v = getattr(t, k)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise fail("must be a positive integer", f"train.{k}")
    if (t.steps is None) == (t.epochs is None):
        raise fail("set exactly one of 'steps' and 'epochs'", "train.steps")
    if not (isinstance(t.lr, (int, float)) and 0 < t.lr < 1):
        raise fail("must be a number between 0 and 1", "train.lr")
    if not (isinstance(t.dropout, (int, float)) and 0 <= t.dropout < 1):
        raise fail("must be in [0, 1)", "train.dropout")
    if t.loss_on not in ("answer", "all"):
        raise fail("must be 'answer' or 'all'", "train.loss_on")
    if t.precision not in ("auto", "bf16", "fp32"):
        raise fail("must be 'auto', 'bf16' or 'fp32'", "train.precision")
    from traitmap.jobs import TRAINERS

    if t.trainer not in TRAINERS:
        raise fail(f"unknown trainer '{t.trainer}' (choose from {', '.join(TRAINERS)})", "train.trainer")
    if t.scheduler not in ("cosine", "linear", "constant"):
        raise fail("must be 'cosine', 'linear' or 'constant'", "train.scheduler")
    if not t.target_modules or not all(isinstance(m, str) for m in t.target_modules):
        raise fail("must be a non-empty list of module names", "train.target_modules")


HUB = "hub"


def resolve_data_dir(config: StudyConfig, override: str | None = None) -> Path | None:
    """Where task files are read from: --data-dir, then TRAITMAP_DATA_DIR, then the study file.

    The value "hub" means: read every task from its Hugging Face hub id (returns None).
    """
    chosen = override or os.environ.get("TRAITMAP_DATA_DIR") or config.data_dir
    if not chosen:
        raise TraitmapError(
            "no data directory: pass --data-dir (a folder, or 'hub' to read from the Hugging Face hub), "
            "set TRAITMAP_DATA_DIR, or set data_dir in the study file"
        )
    if chosen == HUB:
        return None
    p = Path(chosen).expanduser()
    if not p.is_dir():
        raise TraitmapError(f"data directory '{p}' does not exist", field="data_dir")
    return p.resolve()
