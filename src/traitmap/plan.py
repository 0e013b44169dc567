"""What a study consists of: its adapters and cells, which are done, and the examples
each adapter trains on and each cell evaluates. Shared by the runner, the executors,
`Study` and `traitmap status`; it only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from traitmap import data, tasks
from traitmap.store import Store
from traitmap.study import StudyConfig

CONFIG_FILE = "config.json"
DB_FILE = "traitmap.sqlite"
# Settings that finished work depends on: changing them in an existing output dir is refused.
FROZEN_KEYS = ("base_model", "train", "eval")


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


def check_tasks(config: StudyConfig) -> None:
    """Every source and target names a known task; every source may be trained on."""
    for s in config.sources:
        task = tasks.get(s.task, extra_dirs=config.task_dirs)
        task.check_trainable()
    for t in config.targets:
        tasks.get(t, extra_dirs=config.task_dirs).check_evaluable()


def make_plan(config: StudyConfig, store: Store | None = None) -> Plan:
    adapters = [(s.name, seed) for s in config.sources for seed in config.seeds]
    cells = [("base", -1, t) for t in config.targets]
    cells += [(name, seed, t) for name, seed in adapters for t in config.targets]
    done_adapters = {a for a in adapters if store is not None and store.adapter_done(*a)}
    return Plan(adapters, cells, done_adapters, store.done_cells() if store is not None else set())


def model_names(config: StudyConfig) -> list[str]:
    return ["base"] + [s.name for s in config.sources]


def source_examples(config: StudyConfig, source_name: str, data_dir: Path | None, seed: int) -> list:
    """The rows an adapter trains on: the source's train split, its variant, then a seeded sample.

    The variant sees the whole split (balancing 64 rows of a 3%-minority class would
    leave almost nothing); the sample keeps each label's share.
    """
    source = config.source(source_name)
    task = tasks.get(source.task, extra_dirs=config.task_dirs)
    task.check_trainable()
    examples = task.examples("train", data_dir, seed=seed)
    if source.variant:
        examples = data.apply_variant(examples, source.variant, task, seed)
    if config.train.examples is not None:
        examples = data.subsample(examples, config.train.examples, seed)
    return examples


def target_examples(config: StudyConfig, task_name: str, data_dir: Path | None) -> list:
    """The evaluated examples of a target: the same for every model (seeded by the study seed)."""
    task = tasks.get(task_name, extra_dirs=config.task_dirs)
    return task.examples("test", data_dir, limit=config.eval.limit_for(task_name), seed=config.seed)


def adapter_path(out_dir: Path, name: str, seed: int) -> Path:
    return out_dir / "adapters" / name / f"seed{seed}"
