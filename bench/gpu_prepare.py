"""Build the small files bench/gpu_check.py takes to a GPU machine. Run here, on the CPU.

The GPU machine the check runs on has no data dir and no room for the model's weights
(98 MB as GGUF; the transfer limit is 64 MiB), so everything it needs from the data and
the model is prepared here once and committed under bench/gpu_assets/:

- config.json, generation_config.json, tokenizer_config.json, tokenizer.json.gz:
  SmolLM2-135M's architecture and tokenizer, copied from the dequantized model cache
  (no weights; the check builds the architecture with seeded random weights);
- workload.json.gz: real prompts and training rows, rendered by traitmap's own tasks from
  the data dir: choice prompts of the paper's six choice targets (test splits), GSM8K test
  prompts, and training rows of the paper's ten sources in proportion to their sizes;
- paper_plan.json: the token counts of studies/paper.toml (every training row and every
  test prompt tokenized, as the dry-run estimate counts them), from which the check
  estimates the study's time on the GPU.

Usage: TRAITMAP_DATA_DIR=... python bench/gpu_prepare.py [--study studies/paper.toml]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "bench" / "gpu_assets"
COPIED = ("config.json", "generation_config.json", "tokenizer_config.json")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default=str(ROOT / "studies" / "paper.toml"))
    ap.add_argument("--data-dir", default=None, help="default: TRAITMAP_DATA_DIR")
    ap.add_argument("--choice-prompts", type=int, default=128)
    ap.add_argument("--generate-prompts", type=int, default=64)
    ap.add_argument("--train-rows", type=int, default=256)
    args = ap.parse_args()

    from traitmap import models, tasks
    from traitmap.config import load, resolve_data_dir
    from traitmap.backends.base import MAX_PROMPT_TOKENS
    from traitmap.estimate import DEFAULT_SPEEDS
    from traitmap.plan import make_plan, source_examples, target_examples
    from traitmap.tokens import prompt_ids
    from traitmap.train import tokenize_examples

    start = time.perf_counter()
    config = load(args.study)
    data_dir = resolve_data_dir(config, args.data_dir)
    model_dir = models.resolve(config.base_model)
    tokenizer = models.load_tokenizer(model_dir)
    ASSETS.mkdir(parents=True, exist_ok=True)

    # the architecture and tokenizer ------------------------------------------------------
    for name in COPIED:
        shutil.copyfile(model_dir / name, ASSETS / name)
    (ASSETS / "tokenizer.json.gz").write_bytes(gzip.compress((model_dir / "tokenizer.json").read_bytes(), 9, mtime=0))

    # the paper's plan, counted -----------------------------------------------------------
    cfg = config.train
    plan = make_plan(config)
    train_rows, sources = {}, []
    for source in config.sources:
        examples = source_examples(config, source.name, data_dir, config.seed)
        lengths = [len(r["input_ids"]) for r in tokenize_examples(tokenizer, examples, cfg.max_length, cfg.loss_on)]
        steps = cfg.total_steps(len(examples))
        batch = min(cfg.batch_size, len(examples))
        mean = sum(lengths) / len(lengths)
        sources.append({
            "name": source.name, "examples": len(examples), "steps": steps,
            "mean_tokens": round(mean, 1), "tokens": round(steps * cfg.grad_accum * batch * mean),
            "adapters": sum(1 for name, _ in plan.adapters if name == source.name),
        })
        train_rows[source.name] = examples
        print(f"train  {source.name:24s} {len(examples):7d} rows, {mean:7.1f} tokens/row, {steps} steps")
    targets, eval_examples = [], {}
    for target in config.targets:
        task = tasks.get(target, extra_dirs=config.task_dirs)
        examples = target_examples(config, target, data_dir)
        eval_examples[target] = (task, examples)
        prompt = sum(len(prompt_ids(tokenizer, ex.prompt, MAX_PROMPT_TOKENS)) for ex in examples)
        row = {"name": target, "kind": task.kind, "examples": len(examples), "prompt_tokens": prompt,
               "cells": sum(1 for _, _, t in plan.cells if t == target)}
        if task.kind == "choice":
            ids = [len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in task.choices]
            single = all(n == 1 for n in ids)
            # as the hf backend runs them: one sequence per prompt when every choice is one token
            row["score_tokens"] = prompt if single else len(task.choices) * prompt + len(examples) * sum(ids)
            row["sequences"] = len(examples) * (1 if single else len(task.choices))
        else:
            new = config.eval.max_new_tokens.get(target) or task.max_new_tokens
            row["max_new_tokens"] = new
            row["score_tokens"] = prompt  # the prefill
            row["new_tokens"] = len(examples) * new  # an upper bound: outputs usually stop earlier
        targets.append(row)
        print(f"eval   {target:24s} {len(examples):7d} examples, {prompt / max(1, len(examples)):7.1f} prompt tokens")
    paper = {
        "study": Path(args.study).name, "base_model": config.base_model, "seeds": config.seeds,
        "train": {k: getattr(cfg, k) for k in ("r", "alpha", "batch_size", "grad_accum", "max_length", "epochs",
                                                 "precision", "loss_on")},
        "eval_batch_size": config.eval.batch_size,
        "sources": sources, "targets": targets,
        "cpu_default_speeds": DEFAULT_SPEEDS,
        "note": "training tokens = steps x grad_accum x batch x mean row length (prompt + answer + eos, cut at "
                "max_length), every training row tokenized; evaluation tokens from every test prompt (last "
                f"{MAX_PROMPT_TOKENS} tokens); generation counted at max_new_tokens (an upper bound)",
    }
    (ASSETS / "paper_plan.json").write_text(json.dumps(paper, indent=1) + "\n")

    # real prompts and training rows ------------------------------------------------------
    rng = random.Random(0)
    choice_targets = [t for t in config.targets if eval_examples[t][0].kind == "choice"]
    per_target = math.ceil(args.choice_prompts / len(choice_targets))
    choice = []
    for target in choice_targets:
        task, examples = eval_examples[target]
        for ex in rng.sample(examples, min(per_target, len(examples))):
            request = task.request(ex)
            choice.append({"task": target, "prompt": request.prompt, "choices": list(request.choices)})
    rng.shuffle(choice)
    choice = choice[: args.choice_prompts]
    task, examples = eval_examples["gsm8k"]
    generate = []
    for ex in rng.sample(examples, min(args.generate_prompts, len(examples))):
        request = task.request(ex)
        generate.append({"task": "gsm8k", "prompt": request.prompt, "max_new_tokens": request.max_new_tokens,
                         "stop": list(request.stop)})
    total = sum(len(v) for v in train_rows.values())
    train = []
    for name, examples in train_rows.items():
        k = max(8, round(args.train_rows * len(examples) / total))
        train += [{"source": name, "prompt": ex.prompt, "target": ex.target}
                  for ex in rng.sample(examples, min(k, len(examples)))]
    rng.shuffle(train)
    workload = {
        "source": f"rendered by traitmap's tasks from the data dir by bench/gpu_prepare.py ({Path(args.study).name})",
        "choice": choice, "generate": generate, "train": train,
    }
    (ASSETS / "workload.json.gz").write_bytes(gzip.compress(json.dumps(workload).encode(), 9, mtime=0))
    sizes = {p.name: p.stat().st_size for p in sorted(ASSETS.iterdir())}
    print(f"{len(choice)} choice prompts, {len(generate)} generate prompts, {len(train)} training rows")
    print("wrote", ", ".join(f"{k} ({v / 1e3:.0f} kB)" for k, v in sizes.items()),
          f"in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
