"""traitmap's hot paths against anchors measured in the same run, on identical requests
from the real data, written to BENCHMARKS.md with the machine they ran on.

- choice scoring: traitmap's `hf` backend vs lm-evaluation-harness's HF backend
  (`HFLM.loglikelihood`), the same (prompt, choice) pairs, the same batch size;
- greedy generation: GSM8K prompts for every adapter of a study (the quickstart's, run
  `make demo` first) vs lm-eval's `generate_until` (one HFLM per adapter, as lm-eval
  evaluates one model at a time), the same token limit and stop strings;
- LoRA training tokens/s against the matmul peak measured here, in the precision that
  `precision = "auto"` picks on this machine, and in fp32.

lm-eval is a dev-only dependency of this script (`make bench` installs it).
Usage: python bench/run_all.py [--quick] [--study runs/quickstart]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import date
from pathlib import Path

import torch

from traitmap import models, speeds, tasks
from traitmap.backends import AdapterRef, Request
from traitmap.backends.hf import HFBackend
from traitmap.plan import source_examples
from traitmap.config import TrainConfig, load
from traitmap.train import steady_tokens_per_second, train_adapter, training_precision

ROOT = Path(__file__).resolve().parents[1]
CHOICE_TARGETS = ["imdb", "amazon_polarity", "msrp_paraphrase", "tweeteval_offensive", "flipkart", "mnli"]


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 8) -> float:
    """GFLOP/s of one large square matmul: what this machine's cores can do at best."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    for _ in range(2):
        a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def lm_eval_model(model_dir: Path, batch_size: int, adapter: AdapterRef | None = None):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(model_dir), device="cpu", dtype="float32", batch_size=batch_size,
                peft=str(adapter.path) if adapter else None)


def bench_scoring(model_dir: Path, data_dir: Path, per_task: int, batch_size: int, adapters: list) -> dict:
    from lm_eval.api.instance import Instance

    requests = []
    for name in CHOICE_TARGETS:
        task = tasks.get(name)
        requests += [task.request(ex) for ex in task.examples("test", data_dir, limit=per_task, seed=0)]
    backend = HFBackend(model_dir, batch_size=batch_size)
    # the tokens traitmap runs: each prompt once, then the later tokens of multi-token choices
    tokens = sum(len(backend.tokenizer(r.prompt)["input_ids"])
                 + sum(len(backend.tokenizer(c, add_special_tokens=False)["input_ids"]) - 1 for c in r.choices)
                 for r in requests)
    list(backend.answer(requests[:4]))  # warm-up
    ours, ours_s = timed(lambda: dict(backend.answer(requests)))

    pairs = [(r.prompt, c) for r in requests for c in r.choices]
    lm = lm_eval_model(model_dir, batch_size)
    lm.loglikelihood([Instance("loglikelihood", {}, pair, 0) for pair in pairs[:4]])
    theirs, theirs_s = timed(lambda: lm.loglikelihood([Instance("loglikelihood", {}, pair, 0) for pair in pairs]))
    k, agree = 0, 0
    for i, r in enumerate(requests):
        lm_scores = {c: theirs[k + j][0] for j, c in enumerate(r.choices)}
        k += len(r.choices)
        agree += max(r.choices, key=lm_scores.get) == max(r.choices, key=ours[i].logprobs.get)

    mixed = [Request(r.prompt, adapter=a, choices=r.choices) for r in requests for a in [None, *adapters]]
    list(backend.answer([m for m in mixed if m.adapter is not None][:4]))  # load adapters outside the timing
    _, mixed_s = timed(lambda: list(backend.answer(mixed)))
    return {"requests": len(requests), "pairs": len(pairs), "tokens": tokens, "traitmap_s": ours_s,
            "lm_eval_s": theirs_s, "speedup": theirs_s / ours_s, "argmax_agreement": agree / len(requests),
            "mixed_models": 1 + len(adapters), "mixed_s": mixed_s, "mixed_tokens": tokens * (1 + len(adapters))}


def bench_generation(model_dir: Path, data_dir: Path, n_prompts: int, max_new: int, batch_size: int,
                     lm_batch_size: int, adapters: list) -> dict:
    from lm_eval.api.instance import Instance

    task = tasks.get("gsm8k")
    examples = task.examples("test", data_dir, limit=n_prompts, seed=0)
    requests = [task.request(ex, a, max_new) for a in [None, *adapters] for ex in examples]
    backend = HFBackend(model_dir, batch_size=batch_size)
    list(backend.answer([Request(r.prompt, r.adapter, max_new_tokens=1) for r in requests[::n_prompts]]))  # load adapters
    ours, ours_s = timed(lambda: dict(backend.answer(requests)))
    produced = sum(r.tokens for r in ours.values())

    theirs, theirs_s = [], 0.0
    for adapter in [None, *adapters]:
        lm = lm_eval_model(model_dir, lm_batch_size, adapter)
        gen_args = {"until": list(task.stop), "max_gen_toks": max_new, "do_sample": False}
        out, seconds = timed(lambda: lm.generate_until(
            [Instance("generate_until", {}, (ex.prompt, gen_args), 0) for ex in examples]))
        theirs += out
        theirs_s += seconds
    same = sum(ours[i].text == text for i, text in enumerate(theirs))
    return {"requests": len(requests), "models": 1 + len(adapters), "max_new_tokens": max_new, "produced": produced,
            "traitmap_s": ours_s, "lm_eval_s": theirs_s, "speedup": theirs_s / ours_s,
            "same_text": same / len(requests), "batch_size": batch_size, "lm_batch_size": lm_batch_size}


def bench_training(model_dir: Path, data_dir: Path, study_file: Path, steps: int, peaks: dict) -> list[dict]:
    """The quickstart's training settings on its real source rows, in each precision."""
    config = load(study_file)
    examples = source_examples(config, "gsm8k", data_dir, 0) + source_examples(config, "imdb", data_dir, 0)
    params = sum(p.numel() for p in models.load_model(model_dir).parameters())
    auto = training_precision("auto", torch.device("cpu"))
    rows = []
    for precision in dict.fromkeys([auto, "fp32"]):
        cfg = TrainConfig(**{**config.train.__dict__, "steps": steps + 1, "precision": precision})
        tokens_per_s = steady_tokens_per_second(train_adapter(model_dir, examples, cfg, 0).log["log"])
        # LoRA training: forward (2 flops per parameter per token) and the activations' gradients
        # (2 more); the frozen base weights get no gradients.
        achieved = 4 * params * tokens_per_s / 1e9
        rows.append({"precision": precision, "auto": precision == auto, "tokens_per_s": tokens_per_s,
                     "gflops": achieved, "peak_gflops": peaks[precision], "share_of_peak": achieved / peaks[precision],
                     "batch_size": cfg.batch_size, "max_length": cfg.max_length})
    return rows


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
    parser.add_argument("--study", type=Path, default=ROOT / "runs" / "quickstart", help="a finished study's output folder")
    parser.add_argument("--quick", action="store_true", help="fewer requests and steps")
    args = parser.parse_args()
    from traitmap.config import resolve_data_dir

    config = load(ROOT / "studies" / "quickstart.toml")
    data_dir = resolve_data_dir(config)
    model_dir = models.resolve(args.model)
    adapters = [AdapterRef(p.parent.name, 0, p) for p in sorted((args.study / "adapters").glob("*/seed0"))]
    if not adapters:
        raise SystemExit(f"no adapters in {args.study}: run `make demo` first")
    machine = speeds.machine_description()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}

    scoring = bench_scoring(model_dir, data_dir, 8 if args.quick else 24, 16, adapters)
    generation = bench_generation(model_dir, data_dir, 8 if args.quick else 16, 128, 32, 16, adapters)
    training = bench_training(model_dir, data_dir, ROOT / "studies" / "quickstart.toml", 3 if args.quick else 8, peaks)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    results = {"date": str(date.today()), "machine": machine, "peaks_gflops": peaks, "scoring": scoring,
               "generation": generation, "training": training, "peak_rss_gb": peak_gb}
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    s, g = scoring, generation
    lines = [
        "# Benchmarks", "",
        f"Measured {date.today()} with `python bench/run_all.py{' --quick' if args.quick else ''}` (model {args.model}, "
        f"adapters of `{args.study.name}`). CPU: {machine['cpu']}; flags: {', '.join(machine['flags'])}; "
        f"{machine['cores']} cores, {machine['threads']} torch threads, torch {machine['torch']}. "
        f"Peak RSS {peak_gb:.1f} GB. Every anchor below ran in the same process, on the same requests.", "",
        "| what | traitmap | anchor | ratio |", "|---|---:|---:|---:|",
        f"| choice scoring: {s['requests']} real prompts of {len(CHOICE_TARGETS)} targets ({s['pairs']} prompt-choice pairs), "
        f"base model, batch 16 | {s['traitmap_s']:.1f} s ({s['tokens'] / s['traitmap_s']:.0f} prompt tok/s) | "
        f"lm-eval `loglikelihood` {s['lm_eval_s']:.1f} s | **{s['speedup']:.2f}x** |",
        f"| greedy generation: {g['requests']} GSM8K requests ({g['requests'] // g['models']} prompts x {g['models']} models), "
        f"≤{g['max_new_tokens']} new tokens, stop strings | {g['traitmap_s']:.1f} s ({g['produced'] / g['traitmap_s']:.0f} "
        f"produced tok/s; {g['batch_size']} rows in flight, adapters mixed) | lm-eval `generate_until` {g['lm_eval_s']:.1f} s "
        f"(batch {g['lm_batch_size']}, one model at a time) | **{g['speedup']:.2f}x** |",
    ]
    for t in training:
        lines.append(f"| LoRA training, quickstart settings (batch {t['batch_size']}, ≤{t['max_length']} tokens), "
                     f"{t['precision']}{' (auto here)' if t['auto'] else ''} | {t['tokens_per_s']:.0f} tok/s = "
                     f"{t['gflops']:.0f} GFLOP/s | matmul peak {t['precision']} {t['peak_gflops']:.0f} GFLOP/s | "
                     f"**{t['share_of_peak']:.0%}** |")
    lines += [
        "",
        f"Agreement on the same requests: choice argmax {s['argmax_agreement']:.1%} with lm-eval; greedy text identical "
        f"for {g['same_text']:.1%} of the generation requests.",
        f"All {s['mixed_models']} models of the study in one call (mixed-adapter batches): {s['mixed_tokens'] / s['mixed_s']:.0f} "
        f"prompt tok/s ({s['mixed_s']:.1f} s).",
        f"Quickstart wall time (`make demo`, excluding set-up): {quickstart_seconds()}.", "",
    ]
    notes = ROOT / "bench" / "NOTES.md"
    if notes.is_file():
        lines += [notes.read_text()]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
