"""What a study consists of: its adapters and cells, which are done, and the examples
each adapter trains on and each cell evaluates. Shared by the runner, the executors,
`Study` and `traitmap status`; it only reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from traitmap import data, tasks
from traitmap.errors import TraitmapError
from traitmap.store import Store
from traitmap.config import StudyConfig

CONFIG_FILE = "config.json"
DB_FILE = "traitmap.sqlite"
# Settings that finished work depends on: changing them in an existing output dir is refused.
FROZEN_KEYS = ("base_model", "train", "eval")
UNFROZEN_EVAL_KEYS = ("code_execution",)  # how the work ran, not what it computed


def frozen_value(config: dict, key: str):
    """A saved or current config's value of a frozen key, as compared between runs."""
    value = config.get(key)
    if key == "eval" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in UNFROZEN_EVAL_KEYS}
    return value


@dataclass(frozen=True)
class Plan:
    adapters: list[tuple[str, int]]          # (adapter name, seed)
    cells: list[tuple[str, int, str]]        # (model, seed, task); base has seed -1
    done_adapters: set[tuple[str, int]]
    done_cells: set[tuple[str, int, str]]

    @property
    def todo_adapters(self) -> list[tuple[str, int]]:
        return [a for a in self.adapters if a not in self.done_adapters]

    @property
    def todo_cells(self) -> list[tuple[str, int, str]]:
        return [c for c in self.cells if c not in self.done_cells]


def make_plan(config: StudyConfig, store: Store | None = None) -> Plan:
    adapters = [(s.name, seed) for s in config.sources for seed in config.seeds]
    cells = [("base", -1, t) for t in config.targets]
    cells += [(name, seed, t) for name, seed in adapters for t in config.targets]
    done_adapters = {a for a in adapters if store is not None and store.adapter_done(*a)}
    return Plan(adapters, cells, done_adapters, store.done_cells() if store is not None else set())


def model_names(config: StudyConfig) -> list[str]:
    return ["base"] + [s.name for s in config.sources]


def source_examples(config: StudyConfig, source_name: str, data_dir: Path | None, seed: int) -> list:
    """The rows an adapter trains on: the source's train split, its variant, then a seeded sample."""
    return source_slices(config, source_name, data_dir, seed)[0]


def source_slices(config: StudyConfig, source_name: str, data_dir: Path | None, seed: int,
                  evaluated: set[str] | None = None) -> tuple[list, list]:
    """The rows an adapter trains on and the rows it is validated on (both from the train
    split). `evaluated`: `evaluated_texts`, when the caller has it already."""
    source = config.source(source_name)
    task = tasks.get(source.task, extra_dirs=config.task_dirs)
    task.check_trainable()
    if evaluated is None and config.train.validation_examples:
        evaluated = evaluated_texts(config, data_dir)
    return split_source(task.examples("train", data_dir, seed=seed), config, source, task, seed, evaluated or set())


def split_source(examples: list, config: StudyConfig, source, task, seed: int,
                 evaluated: set[str]) -> tuple[list, list]:
    """A source's train split -> (training sample, validation slice).

    The variant sees the whole split (balancing 64 rows of a 3%-minority class would
    leave almost nothing). The validation slice is drawn first, from rows whose text no
    target evaluates; every row sharing a text with it (short reviews repeat) is then
    left out of the training sample, which is drawn from the rest. Both samples keep each
    label's share. Without a validation slice the training sample is drawn from the whole
    split.
    """
    if source.variant:
        examples = data.apply_variant(examples, source.variant, task, seed)
    validation = []
    if config.train.validation_examples:
        candidates = [ex for ex in examples if text_of(ex) not in evaluated]
        validation = data.subsample(candidates, config.train.validation_examples, seed)
        held_out = {text_of(ex) for ex in validation}
        examples = [ex for ex in examples if text_of(ex) not in held_out]
    if config.train.examples is not None:
        examples = data.subsample(examples, config.train.examples, seed)
    return examples, validation


def text_of(example) -> str:
    """What makes two examples the same question: the input text, else the whole prompt."""
    return example.input_text or example.prompt


def evaluated_texts(config: StudyConfig, data_dir: Path | None) -> set[str]:
    """The texts of every example any target of the study evaluates."""
    return {text_of(ex) for target in config.targets for ex in target_examples(config, target, data_dir)}


def target_examples(config: StudyConfig, task_name: str, data_dir: Path | None) -> list:
    """The evaluated examples of a target: the same for every model (seeded by the study seed)."""
    task = tasks.get(task_name, extra_dirs=config.task_dirs)
    return task.examples("test", data_dir, limit=config.eval.limit_for(task_name), seed=config.seed)


def read_saved(out_dir: Path) -> dict:
    """An output folder's config.json (config, data_dir, versions, ...); a folder that is
    not a study's, or a damaged file, is a TraitmapError naming the file."""
    out_dir = Path(out_dir)
    path = out_dir / CONFIG_FILE
    if not out_dir.is_dir():
        raise TraitmapError("not a folder" if out_dir.exists() else "folder not found", file=out_dir)
    if not path.is_file():
        raise TraitmapError("not a traitmap output directory (no config.json)", file=out_dir)
    try:
        saved = json.loads(data.read_text(path, "config.json"))
    except json.JSONDecodeError as bad:
        raise TraitmapError(f"damaged, not valid JSON: {bad.msg} (column {bad.colno}); was the file cut short?",
                            file=path, line=bad.lineno) from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise TraitmapError("not a traitmap study's config.json (a model folder?): point at a study's output folder",
                            file=path)
    return saved


def saved_config(out_dir: Path, saved: dict | None = None) -> StudyConfig:
    """The study config recorded in an output folder."""
    saved = read_saved(out_dir) if saved is None else saved
    try:
        return StudyConfig.from_dict(saved["config"])
    except (TypeError, KeyError, ValueError, AttributeError) as error:
        why = f"no {error}" if isinstance(error, KeyError) else str(error)
        raise TraitmapError(f"config.json does not hold a study this traitmap version can read ({why})",
                            file=Path(out_dir) / CONFIG_FILE, field="config") from None


def adapter_path(out_dir: Path, name: str, seed: int) -> Path:
    return out_dir / "adapters" / name / f"seed{seed}"
