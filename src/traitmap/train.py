"""Train one LoRA adapter on one source's examples (PEFT).

A plain loop, readable top to bottom: tokenize prompt + answer + end-of-text, mask the
prompt out of the loss (unless `loss_on = "all"`, the paper's first version), AdamW with
warmup and the study's schedule (cosine by default; constant for `steps = "auto"`, whose
end is not known in advance), gradient clipping, bf16 autocast where the machine has
native bf16 (`precision = "auto"`). With a validation slice, the loss on it is measured
every `eval_every` steps; `steps = "auto"` trains until that loss stops improving and
keeps the best adapter. The LM head runs only where a loss is taken (a label answer is
1-2 tokens of a ~100-token row). It returns the adapter's files instead of writing
them: where they go is the driver's business (`run.save_adapter`).
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from traitmap.jobs import TrainedAdapter
from traitmap.config import AUTO, TrainConfig
from traitmap.tokens import prompt_ids

IGNORE = -100
PROMPT_FLOOR = 8     # prompt tokens kept however long the answer: an answer alone teaches nothing
AUTO_PERCENTILE = 95  # max_length = "auto" fits prompt + answer of this share of a source's examples


def answer_ids(tokenizer, example) -> list[int]:
    return tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def kept_lengths(prompt: int, answer: int, max_length: int) -> tuple[int, int]:
    """Tokens of the prompt and of the answer (end-of-text included) kept at `max_length`:
    the answer is kept whole while `PROMPT_FLOOR` prompt tokens still fit, and the prompt
    loses its start; an answer longer than that loses its end."""
    kept_answer = min(answer, max(0, max_length - PROMPT_FLOOR))
    return min(prompt, max_length - kept_answer), kept_answer


def auto_max_length(lengths: list[tuple[int, int]], cap: int) -> int:
    """`max_length = "auto"`: long enough for prompt + answer of `AUTO_PERCENTILE`% of the
    examples (`lengths`: (prompt, answer) tokens each), at most `cap`."""
    totals = [p + a for p, a in lengths] or [PROMPT_FLOOR + 1]
    return int(min(cap, max(PROMPT_FLOOR + 1, np.percentile(totals, AUTO_PERCENTILE, method="inverted_cdf"))))


def example_lengths(tokenizer, examples) -> list[tuple[int, int]]:
    """(prompt, answer) tokens of each example, untruncated."""
    return [(len(prompt_ids(tokenizer, ex.prompt)), len(answer_ids(tokenizer, ex))) for ex in examples]


def truncation(lengths: list[tuple[int, int]], max_length: int) -> dict:
    """What `max_length` cuts: the share of examples cut at all, the share whose answer
    lost its end (end-of-text included), and the share that lost the whole answer."""
    cut = end_lost = lost = 0
    for prompt, answer in lengths:
        _, kept = kept_lengths(prompt, answer, max_length)
        cut += prompt + answer > max_length
        end_lost += kept < answer
        lost += kept == 0
    n = max(1, len(lengths))
    return {"max_length": max_length, "share_cut": round(cut / n, 4), "share_answer_end_lost": round(end_lost / n, 4),
            "share_answer_lost": round(lost / n, 4)}


def resolve_max_length(cfg: TrainConfig, lengths: list[tuple[int, int]]) -> int:
    return auto_max_length(lengths, cfg.max_length_cap) if cfg.max_length == AUTO else cfg.max_length


def tokenize_examples(tokenizer, examples, max_length: int, loss_on: str) -> list[dict]:
    """prompt + answer + eos as token ids, with labels masked on the prompt when training on answers."""
    rows = []
    for ex in examples:
        answer = answer_ids(tokenizer, ex)
        answer = answer[: min(len(answer), max(0, max_length - PROMPT_FLOOR))]  # as kept_lengths
        prompt = prompt_ids(tokenizer, ex.prompt, max_length - len(answer))
        ids = prompt + answer
        labels = ([IGNORE] * len(prompt) if loss_on == "answer" else list(prompt)) + answer
        rows.append({"input_ids": ids, "labels": labels})
    return rows


def _padded(chunk: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows right-padded into (input ids, attention mask, labels) (training needs no left padding)."""
    width = max(len(r["input_ids"]) for r in chunk)
    ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
    labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for k, r in enumerate(chunk):
        n = len(r["input_ids"])
        ids[k, :n] = torch.tensor(r["input_ids"])
        labels[k, :n] = torch.tensor(r["labels"])
        mask[k, :n] = 1
    return ids, mask, labels


def _batches(rows: list[dict], batch_size: int, pad_id: int, rng: random.Random, pool: int = 8):
    """Endless shuffled batches, right-padded.

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
            yield _padded([rows[j] for j in batch], pad_id)


def answer_loss(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over the labelled positions, and their number.

    The model's head runs only at the positions that predict a label (`logits_to_keep`
    as a boolean mask): the same loss as the full logits', without the vocabulary-sized
    product at every prompt token."""
    targets = labels[:, 1:]
    wanted = targets != IGNORE
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = wanted
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep, use_cache=False).logits
    loss = torch.nn.functional.cross_entropy(logits.float(), targets[wanted], reduction="sum")
    return loss, int(wanted.sum())


def validation_loss(model, rows: list[dict], batch_size: int, pad_id: int, where: torch.device, autocast) -> float:
    """Mean loss per labelled token over `rows`, forward only; batches of similar lengths,
    and a token-weighted mean, so the value does not depend on how rows are batched."""
    order = sorted(range(len(rows)), key=lambda j: len(rows[j]["input_ids"]))
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad(), autocast:
        for start in range(0, len(order), batch_size):
            ids, mask, labels = (t.to(where) for t in _padded([rows[j] for j in order[start:start + batch_size]], pad_id))
            loss, n = answer_loss(model, ids, mask, labels)
            total, count = total + loss.item(), count + n
    model.train()
    return total / count if count else float("nan")


@dataclass
class EarlyStopping:
    """When `steps = "auto"` stops, and which adapter it keeps.

    Stops once `patience` validations in a row have not improved on the reference loss by
    `min_delta`; the reference moves only on such an improvement. The adapter kept is the
    one with the lowest validation loss seen, however small its lead.
    """

    patience: int
    min_delta: float
    best_loss: float = math.inf
    best_step: int | None = None
    reference: float = math.inf
    waited: int = 0

    def update(self, step: int, loss: float) -> bool:
        """Record a validation loss; True when it is the best so far (keep this adapter)."""
        if loss < self.reference - self.min_delta:
            self.reference, self.waited = loss, 0
        else:
            self.waited += 1
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            return True
        return False

    @property
    def stop(self) -> bool:
        return self.waited >= self.patience


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


def train_adapter(model_dir: Path, examples, cfg: TrainConfig, seed: int, *, progress=None,
                  validation=()) -> TrainedAdapter:
    """Train one adapter on `examples`, measuring its loss on `validation`; returns its files
    and training log."""
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

    lengths = example_lengths(tokenizer, examples)
    max_length = resolve_max_length(cfg, lengths)
    rows = tokenize_examples(tokenizer, examples, max_length, cfg.loss_on)
    held_out = tokenize_examples(tokenizer, validation, max_length, cfg.loss_on)
    steps = cfg.total_steps(len(rows))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.scheduler, optimizer, num_warmup_steps=min(cfg.warmup_steps, steps), num_training_steps=steps)
    batches = _batches(rows, min(cfg.batch_size, len(rows)), tokenizer.pad_token_id, rng)
    autocast = torch.autocast(where.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    stopping = EarlyStopping(cfg.patience, cfg.min_delta)
    curve, best_weights, validation_seconds = [], None, 0.0

    def validate(step: int) -> float:
        nonlocal best_weights, validation_seconds
        clock = time.perf_counter()
        loss = validation_loss(model, held_out, cfg.batch_size * cfg.grad_accum, tokenizer.pad_token_id, where, autocast)
        validation_seconds += time.perf_counter() - clock
        curve.append({"step": step, "loss": round(loss, 5)})
        if stopping.update(step, loss) and cfg.auto_steps:
            best_weights = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        return loss

    log, tokens, start = [], 0, time.perf_counter()
    if held_out:
        validate(0)
    for step in range(steps):
        loss_sum, step_tokens = 0.0, 0
        for _ in range(cfg.grad_accum):
            ids, mask, labels = (t.to(where) for t in next(batches))
            with autocast:
                loss, n = answer_loss(model, ids, mask, labels)
                loss = loss / max(n, 1) / cfg.grad_accum
            loss.backward()
            loss_sum += loss.item()
            step_tokens += int(mask.sum())
        tokens += step_tokens
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        entry = {"step": step + 1, "loss": round(loss_sum, 5), "grad_norm": round(grad_norm, 4),
                 "lr": scheduler.get_last_lr()[0], "tokens": step_tokens}
        if held_out and ((step + 1) % cfg.eval_every == 0 or step + 1 == steps):
            entry["val_loss"] = round(validate(step + 1), 5)
        entry["elapsed"] = round(time.perf_counter() - start, 3)
        log.append(entry)
        if progress is not None:
            progress(step + 1, steps, loss_sum)
        if cfg.auto_steps and stopping.stop:
            break
    seconds = time.perf_counter() - start
    if best_weights is not None:  # "auto" keeps the adapter with the lowest validation loss
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in best_weights:
                    p.copy_(best_weights[name])

    trained = len(log)
    summary = {
        "steps": trained, "examples": len(rows), "tokens": tokens, "seconds": round(seconds, 2),
        "validation_seconds": round(validation_seconds, 2),
        "tokens_per_second": round(tokens / (seconds - validation_seconds), 1) if seconds > validation_seconds else None,
        "first_loss": log[0]["loss"], "final_loss": log[-1]["loss"], "seed": seed, "precision": precision,
        "device": where.type, **truncation(lengths, max_length),
        "stopped_by": ("patience" if stopping.stop and cfg.auto_steps else "max_steps" if cfg.auto_steps
                       else "steps" if cfg.steps is not None else "epochs"),
        "log": log,
    }
    if held_out:
        summary.update({
            "validation_examples": len(held_out), "best_val_loss": round(stopping.best_loss, 5),
            "best_step": stopping.best_step, "converged": stopping.stop, "validation": curve,
            "kept_step": stopping.best_step if cfg.auto_steps else trained,
        })
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
    files["training_log.json"] = json.dumps(summary, indent=1).encode()
    return TrainedAdapter(files, summary)
