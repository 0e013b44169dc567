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

import torch

from run_all import ROOT, matmul_peak
from traitmap import models
from traitmap.plan import source_examples
from traitmap.config import load, resolve_data_dir
from traitmap.train import IGNORE, _padded, answer_loss, tokenize_examples


def full_logits_loss(model, ids, mask, labels) -> torch.Tensor:
    return model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss


def selected_loss(model, ids, mask, labels) -> torch.Tensor:
    loss, n = answer_loss(model, ids, mask, labels)
    return loss / max(n, 1)


def step(model, batch, loss_fn, optimizer) -> float:
    """Seconds for one training step."""
    start = time.perf_counter()
    ids, mask, labels = batch
    loss_fn(model, ids, mask, labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def lora_model(model_dir, cfg):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(models.load_model(model_dir), LoraConfig(r=cfg.r, lora_alpha=cfg.alpha,
                                                                    target_modules=list(cfg.target_modules),
                                                                    task_type="CAUSAL_LM"))
    model.train()
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per source and head (one more warms up)")
    parser.add_argument("--sources", nargs="+", default=["flipkart", "gsm8k"])
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    config = load(ROOT / "studies" / "standard.toml")
    cfg = config.train
    data_dir = resolve_data_dir(config)
    model_dir = models.resolve(args.model)
    tokenizer = models.load_tokenizer(model_dir)
    peak = matmul_peak(torch.float32)
    heads = {"every position": full_logits_loss, "labelled positions": selected_loss}
    trainers = {head: lora_model(model_dir, cfg) for head in heads}
    head_params = trainers["every position"][0].get_output_embeddings().weight.numel()
    body_params = sum(p.numel() for p in trainers["every position"][0].get_base_model().parameters()) - head_params
    results = []
    for source in args.sources:
        examples = source_examples(config, source, data_dir, 0)
        rows = tokenize_examples(tokenizer, examples, args.max_length, cfg.loss_on)
        batches = [_padded(rows[i * cfg.batch_size:(i + 1) * cfg.batch_size], tokenizer.pad_token_id)
                   for i in range(args.steps + 1)]
        tokens = sum(int(mask.sum()) for _, mask, _ in batches[1:])
        labelled = sum(int((labels[:, 1:] != IGNORE).sum()) for _, _, labels in batches[1:])
        seconds = dict.fromkeys(heads, 0.0)
        for i, batch in enumerate(batches):  # the two heads alternate, so both see the same machine load
            for head, loss_fn in heads.items():
                model, optimizer = trainers[head]
                took = step(model, batch, loss_fn, optimizer)
                seconds[head] += took if i else 0.0  # the first step pays one-off costs
        needed = 4 * (body_params * tokens + head_params * labelled)
        for head in heads:
            results.append({"source": source, "head": head, "tokens": tokens, "labelled_tokens": labelled,
                            "seconds": seconds[head], "tokens_per_s": tokens / seconds[head],
                            "gflops": needed / seconds[head] / 1e9, "peak_gflops": peak,
                            "share_of_peak": needed / seconds[head] / 1e9 / peak})
    lines = [f"threads {torch.get_num_threads()}, fp32, batch {cfg.batch_size}, max_length {args.max_length}, "
             f"{args.steps} timed steps; matmul peak {peak:.0f} GFLOP/s", "",
             "| source | LM head at | tokens/s | share of matmul peak |", "|---|---|---:|---:|"]
    lines += [f"| {r['source']} ({r['labelled_tokens']} of {r['tokens']} tokens labelled) | {r['head']} | "
              f"{r['tokens_per_s']:.0f} | {r['share_of_peak']:.0%} |" for r in results]
    print("\n".join(lines))
    (ROOT / "bench" / "training_head.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
