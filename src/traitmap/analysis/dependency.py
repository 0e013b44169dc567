"""Dependency relations: which sentence structures does an adapter solve better than the
base model?

The paper explains why a sentiment (Flipkart) adapter helps GSM8K: grouping questions by
the dependency relations they contain, the adapter-to-base success ratio is highest for
relations such as `oprd` (object predicate), i.e. the adapter reads sentence structure
better. `DependencyAnalysis` computes that ratio per relation with a paired bootstrap
interval (base and adapter answer the same questions, so examples are resampled once
for both) and a minimum support, so a ratio from three questions is not read as a trait.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from traitmap.analysis import nlp
from traitmap.analysis import analysis_settings
from traitmap.files import json_ready, write_csv, write_json

BASE = "base"
# The row that compares adapter and base on every example: the yardstick for the rest.
ALL = "(all)"
COLUMNS = ["target", "adapter", "relation", "n", "base_rate", "adapter_rate", "ratio", "ratio_low", "ratio_high"]


def relations_table(relations: Mapping[str, Iterable[str]], target: str) -> pd.DataFrame:
    """example_id -> relations present, as the long table `fit` takes."""
    rows = [(target, example_id, relation) for example_id, found in relations.items() for relation in sorted(set(found))]
    return pd.DataFrame(rows, columns=["target", "example_id", "relation"])


class DependencyAnalysis:
    """Adapter vs base success rate per dependency relation, per target.

    The ratio is (adapter successes + pseudocount) / (base successes + pseudocount) over
    the examples containing the relation: with pseudocount 0.5 a relation the base never
    solves gives a large but finite ratio, and small groups shrink toward 1. Success on
    an example is its mean `correct` over seeds.
    """

    def __init__(self, min_support: int = 10, n_boot: int = 1000, confidence: float = 0.95, pseudocount: float = 0.5, seed: int = 0, base: str = BASE):
        self.min_support = min_support
        self.n_boot = n_boot
        self.confidence = confidence
        self.pseudocount = pseudocount
        self.seed = seed
        self.base = base

    def fit(self, records: pd.DataFrame, relations: pd.DataFrame) -> "DependencyAnalysis":
        """records: (model, task, example_id, correct) for the parsed targets;
        relations: long (target, example_id, relation), one row per relation present."""
        tables = []
        for target, part in records.groupby("task", sort=True):
            success = part.groupby(["example_id", "model"])["correct"].mean().unstack("model")
            if self.base not in success.columns:
                continue
            success = success.dropna(subset=[self.base])
            found = relations[relations["target"] == target]
            tables.append(self._target_table(target, success, found))
        self.table_ = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=COLUMNS)
        return self

    def _target_table(self, target: str, success: pd.DataFrame, found: pd.DataFrame) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        adapters = [m for m in success.columns if m != self.base]
        groups = {ALL: success.index}
        support = found[found["example_id"].isin(success.index)].groupby("relation")["example_id"].unique()
        groups.update({rel: pd.Index(ids) for rel, ids in support.items() if len(ids) >= self.min_support})
        tail = (1 - self.confidence) / 2
        rows = []
        for relation, ids in groups.items():
            for adapter in adapters:
                pair = success.loc[ids, [self.base, adapter]].dropna()
                if pair.empty or (relation != ALL and len(pair) < self.min_support):
                    continue
                base, own = pair[self.base].to_numpy(float), pair[adapter].to_numpy(float)
                # resample examples with replacement, the same draw for base and adapter (paired)
                draws = rng.integers(0, len(pair), size=(self.n_boot, len(pair)))
                boot = (own[draws].sum(axis=1) + self.pseudocount) / (base[draws].sum(axis=1) + self.pseudocount)
                rows.append({
                    "target": target, "adapter": adapter, "relation": relation, "n": len(pair),
                    "base_rate": float(base.mean()), "adapter_rate": float(own.mean()),
                    "ratio": float((own.sum() + self.pseudocount) / (base.sum() + self.pseudocount)),
                    "ratio_low": float(np.quantile(boot, tail)), "ratio_high": float(np.quantile(boot, 1 - tail)),
                })
        table = pd.DataFrame(rows, columns=COLUMNS)
        order = table["relation"].ne(ALL)  # the (all) row first within each adapter
        return table.assign(_order=order).sort_values(["adapter", "_order", "ratio"], ascending=[True, True, False]).drop(columns="_order").reset_index(drop=True)

    def top(self, target: str, adapter: str, k: int = 10) -> pd.DataFrame:
        """The k relations with the highest ratio for one adapter on one target."""
        part = self.table_[(self.table_["target"] == target) & (self.table_["adapter"] == adapter) & (self.table_["relation"] != ALL)]
        return part.nlargest(k, "ratio").reset_index(drop=True)

    def to_dict(self) -> dict:
        return json_ready({
            "min_support": self.min_support, "n_boot": self.n_boot, "confidence": self.confidence, "pseudocount": self.pseudocount,
            "table": self.table_.to_dict(orient="records"),
        })


def default_targets(study) -> list[str]:
    """The targets to parse: the user's list, else the first math generate target (the
    paper's GSM8K), else the first generate target."""
    settings = analysis_settings(study)
    if "dependency_targets" in settings:
        return list(settings["dependency_targets"])
    generate = [t for t in study.config.targets if study.task(t).kind == "generate"]
    math = [t for t in generate if "math" in (study.task(t).tags or [])]
    return (math or generate)[:1]


MINIMUM = "a generate target whose questions can be parsed (the first math one unless dependency_targets says)"


def shortfall(study) -> str | None:
    return None if default_targets(study) else f"needs {MINIMUM}; this study's targets are all choice tasks"


def run(study, out_dir: Path) -> list[Path]:
    """dependency.json and dependency.csv (columns: target, adapter, relation, n,
    base_rate, adapter_rate, ratio, ratio_low, ratio_high; relation "(all)" is every
    example)."""
    settings = analysis_settings(study)
    targets = default_targets(study)
    if not targets:
        return []
    cache_dir = Path(study.cache_dir) / "nlp"
    relation_tables = []
    for target in targets:
        examples = study.target_examples(target)
        parses = nlp.parse([e.input_text or "" for e in examples], cache_dir=cache_dir)
        relation_tables.append(relations_table({e.id: p.relations for e, p in zip(examples, parses)}, target))
    records = pd.concat([study.records(task=t) for t in targets], ignore_index=True)
    analysis = DependencyAnalysis(
        min_support=int(settings.get("dependency_min_support", 10)),
        n_boot=int(settings.get("dependency_bootstrap", 1000)),
        seed=int(settings.get("seed", 0)),
    ).fit(records, pd.concat(relation_tables, ignore_index=True))
    out_dir = Path(out_dir)
    return [
        write_json(out_dir / "dependency.json", analysis.to_dict()),
        write_csv(out_dir / "dependency.csv", analysis.table_),
    ]
