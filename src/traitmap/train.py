"""Train one LoRA adapter on one source's examples (PEFT).

A plain loop, readable top to bottom: tokenize prompt + answer + end-of-text, mask the
prompt out of the loss (unless `loss_on = "all"`, the paper's first version), AdamW with
warmup and a cosine schedule, gradient clipping, bf16 autocast where the machine has
native bf16 (`precision = "auto"`). It returns the adapter's files instead of writing
them: where they go is the driver's business (`run.save_adapter`).
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import torch

from traitmap.jobs import TrainedAdapter
from traitmap.study import TrainConfig
from traitmap.tokens import prompt_ids

IGNORE = -100


def tokenize_examples(tokenizer, examples, max_length: int, loss_on: str) -> list[dict]:
    """prompt + answer + eos as token ids, with labels masked on the prompt when training on answers."""
    rows = []
    for ex in examples:
        answer_ids = tokenizer(ex.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        # Keep the answer whole when possible: long inputs lose their start, not the answer.
        room = max_length - len(answer_ids)
        if room < 8:
            answer_ids = answer_ids[: max_length - 8]
            room = 8
        prompt = prompt_ids(tokenizer, ex.prompt, room)
        ids = prompt + answer_ids
        labels = ([IGNORE] * len(prompt) if loss_on == "answer" else list(prompt)) + answer_ids
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def _batches(rows: list[dict], batch_size: int, pad_id: int, rng: random.Random, pool: int = 8):
    """Endless shuffled batches, right-padded (training needs no left padding).

    Each epoch is shuffled, then cut into pools of `pool` batches whose rows are sorted by
    length, so a batch holds rows of similar length: on a CPU, padding is paid in full.
    """
    while True:
        order = list(range(len(rows)))
        rng.shuffle(order)
        n_full = len(order) - len(order) % batch_size
        batches = []
        for start in range(0, n_full, batch_size * pool):
            by_length = sorted(order[start : min(start + batch_size * pool, n_full)], key=lambda j: len(rows[j]["input_ids"]))
            batches += [by_length[i : i + batch_size] for i in range(0, len(by_length), batch_size)]
        rng.shuffle(batches)
        for batch in batches:
            chunk = [rows[j] for j in batch]
            width = max(len(r["input_ids"]) for r in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for k, r in enumerate(chunk):
                n = len(r["input_ids"])
                ids[k, :n] = torch.tensor(r["input_ids"])
                labels[k, :n] = torch.tensor(r["labels"])
                mask[k, :n] = 1
            yield ids, mask, labels


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix units exist here: a CUDA GPU with bf16, or a CPU with AVX512-BF16
    or AMX. Without them bf16 is emulated (about 30x slower than fp32 on an AVX2 CPU)."""
    if device.type == "cuda":
        # Pre-Ampere GPUs (V100, T4) only emulate bf16, and torch counts that unless told not to.
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def training_precision(setting: str, device: torch.device) -> str:
    """The precision a `precision` setting means on this device: "auto" is bf16 where native."""
    if setting == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return setting


def steady_tokens_per_second(log: list[dict]) -> float:
    """Training speed without the first step, which pays one-off costs (allocation, kernel choice)."""
    return sum(step["tokens"] for step in log[1:]) / (log[-1]["elapsed"] - log[0]["elapsed"])


def train_adapter(model_dir: Path, examples, cfg: TrainConfig, seed: int, *, progress=None) -> TrainedAdapter:
    """Train one adapter; returns its files and training log."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_scheduler

    from traitmap.models import device, load_tokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = load_tokenizer(model_dir)
    where = device()
    precision = training_precision(cfg.precision, where)
    # In bf16 the frozen base weights are stored in bf16 once (autocast would cast all of
    # them again in every forward pass); the LoRA weights stay fp32 (PEFT upcasts them).
    base_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=base_dtype).to(where)
    lora = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM", bias="none",
    )
    model = get_peft_model(model, lora)
    model.train()

    rows = tokenize_examples(tokenizer, examples, cfg.max_length, cfg.loss_on)
    steps = cfg.total_steps(len(rows))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=min(cfg.warmup_steps, steps), num_training_steps=steps)
    batches = _batches(rows, min(cfg.batch_size, len(rows)), tokenizer.pad_token_id, rng)
    autocast = torch.autocast(where.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    log, tokens, start = [], 0, time.perf_counter()
    for step in range(steps):
        loss_sum, step_tokens = 0.0, 0
        for _ in range(cfg.grad_accum):
            ids, mask, labels = (t.to(where) for t in next(batches))
            with autocast:
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / cfg.grad_accum
            loss.backward()
            loss_sum += loss.item()
            step_tokens += int(mask.sum())
        tokens += step_tokens
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        log.append({"step": step + 1, "loss": round(loss_sum, 5), "grad_norm": round(grad_norm, 4),
                    "lr": scheduler.get_last_lr()[0], "tokens": step_tokens,
                    "elapsed": round(time.perf_counter() - start, 3)})
        if progress is not None:
            progress(step + 1, steps, loss_sum)
    seconds = time.perf_counter() - start

    summary = {
        "steps": steps, "examples": len(rows), "tokens": tokens, "seconds": round(seconds, 2),
        "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
        "first_loss": log[0]["loss"], "final_loss": log[-1]["loss"], "seed": seed, "precision": precision,
        "device": where.type, "log": log,
    }
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    files["training_log.json"] = json.dumps(summary, indent=1).encode()
    return TrainedAdapter(files, summary)
