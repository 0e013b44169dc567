"""How long a study's plan will take: `traitmap run --dry-run`. Only reads.

Estimates are token counts divided by speeds. Token counts come from tokenizing a small
sample of each task's examples (the base model's tokenizer when it is already on disk,
else ~4 characters per token); generated answers are counted at the length measured in
this output directory, else at the length of the task's reference answers (capped at
the token limit). Speeds come from the output directory when a run there has finished
work (adapters' training logs, cells' seconds), else from `traitmap calibrate` on this
machine, else from defaults scaled by the model's size.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from traitmap import tasks
from traitmap.backends.base import MAX_PROMPT_TOKENS
from traitmap.durations import duration
from traitmap.errors import TraitmapError
from traitmap.config import AUTO

# Tokens per second of SmolLM2-135M in the quickstart on 2 cores of an AMD EPYC (AVX2, fp32):
# training, scoring prompts, and generating. Conservative fall-backs: `traitmap calibrate`
# replaces them with this machine's own.
DEFAULT_SPEEDS = {"train": 135.0, "score": 300.0, "generate": 90.0}
REFERENCE_PARAMS = 134.5e6  # SmolLM2-135M
SAMPLE = 32                 # examples tokenized per task for the estimate
CHARS_PER_TOKEN = 4.0       # when no tokenizer is on disk
# A validation example costs this share of a training example's time: a forward pass, where
# training adds LoRA's backward (no gradients for the frozen weights). Measured 0.44 on
# GSM8K (bf16, AMD EPYC, 2 cores).
VALIDATION_COST = 0.45
# With steps = "auto" an adapter trains until its validation loss stops improving: the
# adapters of the published studies (results/standard, results/controlled; adapters.csv)
# stopped after this share of max_steps on average (22 adapters), so the estimate counts it and names
# the time with every adapter at max_steps as the upper bound.
AUTO_STEPS_SHARE = 0.73


@dataclass
class EstimateRow:
    step: str            # "train" | "eval"
    item: str            # source name or target name
    kind: str            # "train" | "choice" | "generate"
    units_total: int     # adapters (train) or cells (evaluate)
    units_todo: int
    tokens_per_unit: float
    seconds_per_unit: float
    basis: str           # "measured" | "calibrated" | "default", "...*machine" when scaled by measured cells

    @property
    def seconds_total(self) -> float:
        return self.units_total * self.seconds_per_unit

    @property
    def seconds_todo(self) -> float:
        return self.units_todo * self.seconds_per_unit


@dataclass
class Estimate:
    rows: list[EstimateRow]
    speeds: dict[str, float]       # tokens/s used for the rows not measured in the output dir
    speed_source: str              # one line: where the speeds come from
    token_source: str              # one line: how tokens were counted
    notes: list[str] = field(default_factory=list)

    @property
    def seconds_total(self) -> float:
        return sum(r.seconds_total for r in self.rows)

    @property
    def seconds_todo(self) -> float:
        return sum(r.seconds_todo for r in self.rows)


def find_tokenizer_dir(base_model: str) -> Path | None:
    """A folder holding the base model's tokenizer, found without downloading or converting."""
    from traitmap import models

    if base_model in models.PACKAGED:
        try:
            return models.check(base_model)
        except TraitmapError:  # the model's package is not installed: estimate without it
            return None
    local = Path(base_model).expanduser()
    if local.is_dir():
        return local if (local / "config.json").is_file() else None
    if "/" in base_model:
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(base_model, local_files_only=True, allow_patterns=["*.json", "*.model", "*.txt"]))
        except Exception:  # noqa: BLE001 -- not cached, offline, no such repo: estimate without it
            return None
    return None


def approx_params(model_dir: Path | None) -> float | None:
    """Parameter count from config.json (transformer blocks + embeddings), or None."""
    if model_dir is None or not (model_dir / "config.json").is_file():
        return None
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
        cfg = cfg.get("text_config", cfg)
        h, layers = cfg["hidden_size"], cfg["num_hidden_layers"]
        inter = cfg.get("intermediate_size", 4 * h)
        heads = cfg.get("num_attention_heads", 1)
        head_dim = cfg.get("head_dim") or h // heads
        kv = cfg.get("num_key_value_heads", heads) * head_dim
        q = heads * head_dim
        per_layer = h * q * 2 + h * kv * 2 + 3 * h * inter
        return float(layers * per_layer + cfg.get("vocab_size", 0) * h)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


class _Counter:
    """Token counts for text: the real tokenizer when available, else characters / 4."""

    def __init__(self, model_dir: Path | None):
        self.tokenizer = None
        if model_dir is not None and (model_dir / "tokenizer.json").is_file():
            try:  # the fast tokenizer alone: no transformers import, well under a second
                from tokenizers import Tokenizer

                self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
            except Exception:  # noqa: BLE001 -- an unreadable tokenizer: fall back to characters / 4
                self.tokenizer = None

    def __call__(self, text: str) -> int:
        if self.tokenizer is None:
            return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


def measured_speeds(store) -> dict:
    """Speeds of finished work in an output dir: training tokens/s, eval seconds per example by task."""
    found: dict = {"train": None, "eval": {}, "eval_cells": None}
    if store is None:
        return found
    adapters = store.adapters()
    tokens = seconds = 0.0
    for raw in adapters["train_log"] if not adapters.empty else []:
        try:
            log = json.loads(raw or "{}")
        except ValueError:
            continue
        if log.get("tokens") and log.get("seconds"):
            tokens += float(log["tokens"])
            seconds += float(log["seconds"]) - float(log.get("validation_seconds") or 0)  # counted apart
    if seconds > 0:
        found["train"] = tokens / seconds
    cells = store.cells()
    cells = cells[(cells["n"] > 0) & cells["seconds"].notna()] if not cells.empty else cells
    if not cells.empty:
        grouped = cells.groupby("task")[["seconds", "n"]].sum()
        found["eval"] = {task: row.seconds / row.n for task, row in grouped.iterrows()}
        found["eval_cells"] = cells
    return found


class _Sampler:
    """Reads what the estimate counts from the data folder; a task it cannot read becomes a
    note, not an error (an estimate runs before the plan is validated)."""

    def __init__(self, config, data_dir: Path | None, notes: list[str]):
        self.config, self.data_dir, self.notes = config, data_dir, notes

    def sample(self, task, split):
        if self.data_dir is None:
            return None
        try:
            return task.examples(split, self.data_dir, limit=SAMPLE, seed=self.config.seed)
        except TraitmapError as e:
            self.notes.append(f"could not read {task.name}/{split} for the estimate: {e}")
            return None

    def split_size(self, task, split, limit):
        if limit is not None:
            return limit
        if self.data_dir is None:
            return None
        try:
            return len(task.examples(split, self.data_dir))
        except TraitmapError as e:
            self.notes.append(f"could not count {task.name}/{split}: {e}")
            return None


def estimate_plan(config, plan, data_dir: Path | None, store=None) -> Estimate:
    """Time for the plan's training and evaluation, total and still to do. An estimate."""
    notes: list[str] = []
    model_dir = find_tokenizer_dir(config.base_model)
    count = _Counter(model_dir)
    token_source = ("tokens counted with the base model's tokenizer on a sample of each task"
                    if count.tokenizer is not None else
                    "tokens approximated as characters / 4 (the base model's tokenizer is not on disk yet)")
    params = approx_params(model_dir)
    scale = params / REFERENCE_PARAMS if params else 1.0
    if params is None and config.base_model != "smollm2-135m":
        notes.append(f"the size of '{config.base_model}' is unknown here: times assume a 135M-parameter model")
    speeds = {k: v / scale for k, v in DEFAULT_SPEEDS.items()}
    calibrated = calibrated_speeds(config)
    if calibrated:
        speeds = calibrated["speeds"]
    basis = "calibrated" if calibrated else "default"
    measured = measured_speeds(store)
    reader = _Sampler(config, data_dir, notes)
    rows, training_at_max_steps = _training_rows(config, plan, reader, count, measured["train"] or speeds["train"],
                                                 "measured" if measured["train"] else basis)
    eval_rows, factor, generated_by_reference = _evaluation_rows(
        config, plan, reader, count, speeds, basis, measured, store.mean_output_tokens() if store is not None else {})
    rows += eval_rows
    if measured["train"] or measured["eval"]:
        speed_source = "speeds measured by the finished work in this output directory"
        if factor is not None:
            speed_source += f"; evaluation here ran at {1 / factor:.2g}x the {basis} speed for this model size"
    elif calibrated:
        speed_source = ("this machine's speeds from `traitmap calibrate` on {when} (training ~{train:.0f} tokens/s "
                        "in {precision}, scoring ~{score:.0f}, decoding ~{generate:.0f})").format(
                            when=calibrated["measured"][:10], precision=calibrated["precision"], **speeds)
    else:
        speed_source = ("default speeds measured on SmolLM2-135M on 2 CPU cores (training ~{train:.0f}, scoring "
                        "~{score:.0f}, generation ~{generate:.0f} tokens/s)").format(**DEFAULT_SPEEDS)
        if abs(scale - 1) > 0.05:
            speed_source += f", divided by {scale:.2g} for this model's size"
        notes.append("run `traitmap calibrate` once to measure this machine's speeds (about a minute)")
        if _has_gpu():
            notes.append("a GPU is present: the default speeds are for a CPU, expect much less")
    if generated_by_reference:
        notes.append(f"answers of {', '.join(generated_by_reference)} are counted at the length of the task's "
                     "reference answers (no output of this study measured yet)")
    if config.train.auto_steps:
        at_most = training_at_max_steps + sum(row.seconds_todo for row in eval_rows)
        notes.insert(0, f"steps = \"auto\": each adapter is counted at {AUTO_STEPS_SHARE:.0%} of max_steps = "
                        f"{config.train.max_steps} (with a validation pass every {config.train.eval_every} steps), "
                        "where the adapters of the published studies stopped on average; with every adapter at "
                        f"max_steps the study would take at most {duration(at_most, days=True)}")
    return Estimate(rows, speeds, speed_source, token_source, notes)


def _training_rows(config, plan, reader: _Sampler, count, speed: float,
                   basis: str) -> tuple[list[EstimateRow], float]:
    """One row per source: the tokens its adapters train on (with their validation passes).
    Also returns the seconds the adapters still to train would take, every one at its full
    step count (with steps = "auto": at max_steps, the upper bound)."""
    from traitmap import data as data_mod
    from traitmap.train import auto_max_length

    cfg, rows, at_max_steps = config.train, [], 0.0
    for source in config.sources:
        task = tasks.get(source.task, extra_dirs=config.task_dirs)
        examples = reader.sample(task, "train")
        if examples and source.variant and source.variant.get("kind") == "truncate":
            examples = data_mod.apply_variant(examples, source.variant, task, config.seed)
        longest = cfg.max_length_cap if cfg.max_length == AUTO else cfg.max_length
        if examples:
            lengths = [(count(ex.prompt), count(ex.target) + 1) for ex in examples]
            if cfg.max_length == AUTO:
                longest = auto_max_length(lengths, cfg.max_length_cap)
            per_example = _mean([min(longest, p + a) for p, a in lengths], longest)
        else:
            per_example = longest  # upper bound
        n = cfg.examples if cfg.epochs is None else reader.split_size(task, "train", cfg.examples)
        steps = cfg.total_steps(n if n else 1) if (cfg.steps is not None or n) else None
        if steps is None:
            reader.notes.append(f"the size of {source.task}'s training split is unknown: its training time is left out")
            continue
        batch = min(cfg.batch_size, n) if n else cfg.batch_size

        def tokens_for(steps: int) -> float:
            tokens = steps * cfg.grad_accum * batch * per_example
            if cfg.validation_examples:
                tokens += (steps // cfg.eval_every + 1) * cfg.validation_examples * per_example * VALIDATION_COST
            return tokens

        tokens = tokens_for(max(1, round(steps * AUTO_STEPS_SHARE)) if cfg.auto_steps else steps)
        total = sum(1 for name, _ in plan.adapters if name == source.name)
        todo = sum(1 for name, _ in plan.todo_adapters if name == source.name)
        rows.append(EstimateRow("train", source.name, "train", total, todo, tokens, tokens / speed, basis))
        at_max_steps += todo * tokens_for(steps) / speed
    return rows, at_max_steps


def _evaluation_rows(config, plan, reader: _Sampler, count, speeds: dict, basis: str, measured: dict,
                     output_lengths: dict) -> tuple[list[EstimateRow], float | None, list[str]]:
    """One row per target: its examples' prompt and answer tokens; where some cells are
    measured, the calibrated or default speeds are corrected by this machine's. Also
    returns that correction and the generate targets counted at their reference answers."""
    default_eval: dict[str, float] = {}   # target -> seconds per example at the calibrated or default speeds
    generated_by_reference: list[str] = []
    eval_rows: dict[str, EstimateRow] = {}
    for target in config.targets:
        task = tasks.get(target, extra_dirs=config.task_dirs)
        n = reader.split_size(task, "test", config.eval.limit_for(target))
        examples = reader.sample(task, "test")
        prompt = _mean([min(MAX_PROMPT_TOKENS, count(ex.prompt)) for ex in examples or []], 256.0)
        if task.kind == "choice":
            # the prompt runs once; a choice of several tokens continues from its cache
            per_example = prompt + sum(count(c) - 1 for c in task.choices)
            seconds = per_example / speeds["score"]
        else:
            limit = config.eval.max_new_tokens.get(target) or task.max_new_tokens
            if target in output_lengths:
                new = min(limit, output_lengths[target])
            else:
                new = min(limit, _mean([count(ex.target) for ex in examples or []], limit))
                generated_by_reference.append(target)
            per_example = prompt + new
            seconds = prompt / speeds["score"] + new / speeds["generate"]
        default_eval[target] = seconds
        total = sum(1 for _, _, t in plan.cells if t == target)
        todo = sum(1 for _, _, t in plan.todo_cells if t == target)
        if n is None:
            reader.notes.append(f"the size of {target}'s test split is unknown: its evaluation time is left out")
            continue
        eval_rows[target] = EstimateRow("eval", target, task.kind, total, todo, n * per_example, n * seconds, basis)

    factor = None
    cells = measured["eval_cells"]
    if cells is not None:
        predicted = sum(default_eval[t] * row.n for t, row in cells.set_index("task").iterrows() if t in default_eval)
        actual = sum(row.seconds for t, row in cells.set_index("task").iterrows() if t in default_eval)
        if predicted > 0 and actual > 0:
            factor = actual / predicted
    rows = []
    for target, row in eval_rows.items():
        n = row.seconds_per_unit / default_eval[target]
        if target in measured["eval"]:
            row.seconds_per_unit, row.basis = n * measured["eval"][target], "measured"
        elif factor is not None:
            row.seconds_per_unit, row.basis = row.seconds_per_unit * factor, f"{basis}*machine"
        rows.append(row)
    return rows, factor, generated_by_reference


def calibrated_speeds(config) -> dict | None:
    """This machine's calibrated speeds for the study's base model and training precision."""
    from traitmap import speeds

    found = speeds.load(config.base_model)
    if not found:
        return None
    precision = found["train_precision"] if config.train.precision == "auto" else config.train.precision
    train = found.get(f"train_{precision}")
    if train is None:  # e.g. bf16 forced on a machine where calibration ran fp32 only
        return None
    return {"speeds": {"train": train, "score": found["score"], "generate": found["decode"]},
            "precision": precision, "measured": found["measured"]}


def _has_gpu() -> bool:
    if os.environ.get("TRAITMAP_DEVICE", "").startswith("cuda"):
        return True
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 -- no usable torch: no GPU to mention
        return False
