"""Speed and memory of the hot paths on this machine, written to BENCHMARKS.md.

Measures, on the real base model (SmolLM2-135M unless --model): LoRA training tokens/s
(fp32, and bf16 autocast for a few steps), choice scoring tokens/s (fp32, logits_to_keep),
greedy generation tokens/s at batch 32 (fp32), and reads the quickstart's wall time from
its output directory if it has been run. Usage: python bench/run_all.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from datetime import date
from pathlib import Path

import torch

from traitmap import models
from traitmap.evaluate import choice_logprobs, generate
from traitmap.study import PRESETS, TrainConfig
from traitmap.tasks import Example
from traitmap.train import train_adapter

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the model reads a long review of a product and decides whether the buyer liked it or not".split()


def text(n_words: int, seed: int) -> str:
    return " ".join(WORDS[(i * 7 + seed) % len(WORDS)] for i in range(n_words))


def examples(n: int, prompt_words: int, answer_words: int) -> list[Example]:
    return [Example(id=str(i), prompt=text(prompt_words, i) + "\nAnswer:\n", target=text(answer_words, i + 1),
                    gold="", input_text="", label=None, meta={}) for i in range(n)]


def bench_training(model_dir: Path, precision: str, steps: int, batch: int, length: int) -> dict:
    cfg = TrainConfig(preset="cpu", **{**PRESETS["cpu"], "steps": steps, "batch_size": batch, "max_length": length,
                                       "precision": precision, "warmup_steps": 0})
    # ~length tokens per row: prompt and answer sized to fill max_length.
    log = train_adapter(model_dir, examples(batch * steps, length // 2, length // 2), cfg, 0, Path("/tmp/traitmap-bench-adapter"))
    return {"tokens": log["tokens"], "seconds": log["seconds"], "tokens_per_second": log["tokens_per_second"]}


def bench_scoring(model, tokenizer, n: int, words: int) -> dict:
    prompts = [text(words, i) + "\nSentiment:\n" for i in range(n)]
    tokens = sum(len(tokenizer(p)["input_ids"]) for p in prompts)
    start = time.perf_counter()
    choice_logprobs(model, tokenizer, prompts, ["positive", "negative"], batch_size=16)
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 1)}


def bench_generation(model, tokenizer, batch: int, new_tokens: int) -> dict:
    prompts = [text(30, i) + "\nAnswer:\n" for i in range(batch)]
    start = time.perf_counter()
    outputs = generate(model, tokenizer, prompts, max_new_tokens=new_tokens, stop=[], batch_size=batch)
    seconds = time.perf_counter() - start
    produced = sum(n for _, n in outputs)
    return {"tokens": produced, "seconds": round(seconds, 2), "tokens_per_second": round(produced / seconds, 1)}


def quickstart_seconds() -> str:
    db = ROOT / "runs" / "quickstart" / "traitmap.sqlite"
    if not db.is_file():
        return "not run yet (make demo)"
    import sqlite3

    rows = sqlite3.connect(db).execute("SELECT seconds, command FROM runs WHERE finished IS NOT NULL ORDER BY id").fetchall()
    return f"{rows[0][0]:.0f} s for the first full run ({rows[0][1]})" if rows else "no finished run"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--quick", action="store_true", help="fewer steps and examples")
    args = parser.parse_args()
    steps = 3 if args.quick else 6
    model_dir = models.resolve(args.model)
    results = {
        "train fp32 (B=8, L=256)": bench_training(model_dir, "fp32", steps, 8, 256),
        "train bf16 autocast (B=2, L=128, 1 step)": bench_training(model_dir, "bf16", 1, 2, 128),
    }
    tokenizer, model = models.load_tokenizer(model_dir), models.load_model(model_dir)
    results["choice scoring fp32 (~256-token prompts)"] = bench_scoring(model, tokenizer, 32 if args.quick else 64, 220)
    results["greedy generation fp32 (batch 32, 64 new tokens)"] = bench_generation(model, tokenizer, 32, 64)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024

    lines = [
        "# Benchmarks", "",
        f"Measured {date.today()} with `python bench/run_all.py{' --quick' if args.quick else ''}` "
        f"(model {args.model}); machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads. Peak RSS {peak_gb:.1f} GB.", "",
        "| what | tokens | seconds | tokens/s |", "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {r['tokens']} | {r['seconds']} | {r['tokens_per_second']} |" for name, r in results.items()]
    lines += ["", f"Quickstart wall time (`make demo`, excluding set-up): {quickstart_seconds()}.", ""]
    notes = ROOT / "bench" / "NOTES.md"
    if notes.is_file():
        lines += [notes.read_text()]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
