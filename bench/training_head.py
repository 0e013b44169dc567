"""Training tokens/s with the LM head at every position (the logits of the whole row, as
`model(..., labels=...)` computes them) against the head at the labelled positions only
(`traitmap.train.answer_loss`), on the same rows, steps and settings, with the share of
this machine's matmul peak.

Both are counted against the same work: the flops a training step needs (4 per frozen
parameter per token for the body, forward and the activations' gradients; the head's
4 per parameter only at the labelled positions). What the full-logits step computes
beyond that is waste, so its share is lower.

Usage: python bench/training_head.py [--steps 3] [--sources flipkart gsm8k] [--max-length 128]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from run_all import ROOT, matmul_peak
from traitmap import models
from traitmap.plan import source_examples
from traitmap.study import load, resolve_data_dir
from traitmap.train import IGNORE, _padded, answer_loss, tokenize_examples


def full_logits_loss(model, ids, mask, labels) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss


def selected_loss(model, ids, mask, labels) -> torch.Tensor:
    loss, n = answer_loss(model, ids, mask, labels)
    return loss / max(n, 1)


def timed_steps(model, batches: list, loss_fn, optimizer) -> float:
    """Seconds for the batches after the first (which pays one-off costs)."""
    for i, (ids, mask, labels) in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        loss_fn(model, ids, mask, labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per source and head (one more warms up)")
    parser.add_argument("--sources", nargs="+", default=["flipkart", "gsm8k"])
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    from peft import LoraConfig, get_peft_model

    config = load(ROOT / "studies" / "standard.toml")
    cfg = config.train
    data_dir = resolve_data_dir(config)
    model_dir = models.resolve(args.model)
    tokenizer = models.load_tokenizer(model_dir)
    peak = matmul_peak(torch.float32)
    results = []
    for source in args.sources:
        examples = source_examples(config, source, data_dir, 0)
        rows = tokenize_examples(tokenizer, examples, args.max_length, cfg.loss_on)
        batches = [_padded(rows[i * cfg.batch_size:(i + 1) * cfg.batch_size], tokenizer.pad_token_id)
                   for i in range(args.steps + 1)]
        timed_batches = batches[1:]
        tokens = sum(int(mask.sum()) for _, mask, _ in timed_batches)
        labelled = sum(int((labels[:, 1:] != IGNORE).sum()) for _, _, labels in timed_batches)
        for head, loss_fn in [("every position", full_logits_loss), ("labelled positions", selected_loss)]:
            torch.manual_seed(0)
            base = models.load_model(model_dir).float()
            head_params = base.get_output_embeddings().weight.numel()
            body_params = sum(p.numel() for p in base.parameters()) - head_params  # tied: the embedding is the head
            model = get_peft_model(base, LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, target_modules=list(cfg.target_modules),
                                                    task_type="CAUSAL_LM"))
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
            seconds = timed_steps(model, batches, loss_fn, optimizer)
            needed = 4 * (body_params * tokens + head_params * labelled)
            results.append({"source": source, "head": head, "tokens": tokens, "labelled_tokens": labelled,
                            "seconds": seconds, "tokens_per_s": tokens / seconds, "gflops": needed / seconds / 1e9,
                            "peak_gflops": peak, "share_of_peak": needed / seconds / 1e9 / peak})
    lines = [f"threads {torch.get_num_threads()}, fp32, batch {cfg.batch_size}, max_length {args.max_length}, "
             f"{args.steps} timed steps; matmul peak {peak:.0f} GFLOP/s", "",
             "| source | LM head at | tokens/s | share of matmul peak |", "|---|---|---:|---:|"]
    lines += [f"| {r['source']} ({r['labelled_tokens']} of {r['tokens']} tokens labelled) | {r['head']} | "
              f"{r['tokens_per_s']:.0f} | {r['share_of_peak']:.0%} |" for r in results]
    print("\n".join(lines))
    (ROOT / "bench" / "training_head.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
