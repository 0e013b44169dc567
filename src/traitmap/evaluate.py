"""Evaluate one model (the base model or an adapter) on one task -> per-example records.

Choice tasks are scored the way lm-evaluation-harness scores multiple choice: the summed
log-probability of each verbalizer after the prompt; the prediction is the argmax.
Generate tasks use batched greedy decoding with the task's stop strings and token limit,
then the task's parser and checker.

Why results do not depend on batch composition: evaluation runs in fp32, prompts are
left-padded with explicit position ids, and padded positions are masked, so an example
gets the same log-probabilities and the same greedy tokens whichever examples share its
batch. (bf16 is faster on this CPU, but flips about half of the greedy outputs between
batchings; training may use bf16, evaluation never does.)
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable

import torch


def _left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@functools.lru_cache(maxsize=8)
def _start_tokens(tokenizer) -> tuple[int, ...]:
    """The ids a tokenizer puts before any text (Gemma: <bos>; SmolLM2: none)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tuple(with_special[: len(with_special) - len(tokenizer("a", add_special_tokens=False)["input_ids"])])


def prompt_ids(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """A prompt's token ids after the tokenizer's own start tokens, keeping the last
    `max_tokens` when it is too long (the start tokens stay)."""
    start = list(_start_tokens(tokenizer))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[max(0, len(ids) - (max_tokens - len(start))):]
    return start + ids


def _by_length(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding, same results)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def choice_logprobs(model, tokenizer, prompts: list[str], choices: list[str], batch_size: int, max_prompt_tokens: int = 1024,
                    progress: Callable[[float], None] | None = None) -> list[dict[str, float]]:
    """Summed log-probability of each choice continuation after each prompt."""
    choice_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in choices]
    prompts_ids = [prompt_ids(tokenizer, p, max_prompt_tokens) for p in prompts]
    single_token = all(len(c) == 1 for c in choice_ids)
    # One sequence per prompt when every choice is one token; else one per (prompt, choice).
    seqs, owners = [], []
    for i, p in enumerate(prompts_ids):
        if single_token:
            seqs.append(p)
            owners.append((i, None))
        else:
            for k, c in enumerate(choice_ids):
                seqs.append(p + c)
                owners.append((i, k))
    keep = 1 if single_token else max(len(c) for c in choice_ids) + 1
    results: list[dict[str, float]] = [dict() for _ in prompts]
    for batch in _by_length([len(s) for s in seqs], batch_size):
        ids, mask = (t.to(model.device) for t in _left_pad([seqs[j] for j in batch], tokenizer.pad_token_id))
        logits = model(input_ids=ids, attention_mask=mask, position_ids=_positions(mask), logits_to_keep=keep).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for row, j in enumerate(batch):
            i, k = owners[j]
            if k is None:
                for name, c in zip(choices, choice_ids):
                    results[i][name] = logp[row, -1, c[0]].item()
            else:
                c = choice_ids[k]
                # Token t of the choice is predicted at position -(len(c) + 1) + t.
                positions = range(keep - len(c) - 1, keep - 1)
                results[i][choices[k]] = sum(logp[row, pos, tok].item() for pos, tok in zip(positions, c))
        if progress is not None:
            progress(len(batch) / (1 if single_token else len(choices)))
    return results


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, stop: list[str], batch_size: int,
             max_prompt_tokens: int = 1024, progress: Callable[[int], None] | None = None) -> list[tuple[str, int]]:
    """Greedy continuations, cut at the first stop string: (text, length in tokens)."""
    prompts_ids = [prompt_ids(tokenizer, p, max_prompt_tokens) for p in prompts]
    outputs: list[tuple[str, int]] = [("", 0)] * len(prompts)
    stop_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id}
    for batch in _by_length([len(p) for p in prompts_ids], batch_size):
        ids, mask = (t.to(model.device) for t in _left_pad([prompts_ids[j] for j in batch], tokenizer.pad_token_id))
        kwargs = dict(stop_strings=stop, tokenizer=tokenizer) if stop else {}
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs,
        )
        for row, j in enumerate(batch):
            new = out[row, ids.shape[1]:].tolist()
            end = next((t for t, tok in enumerate(new) if tok in stop_ids), len(new))
            text = tokenizer.decode(new[:end], skip_special_tokens=True)
            cut = min((text.index(s) for s in stop if s in text), default=None)
            if cut is not None:
                text = text[:cut]
                n_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            else:
                n_tokens = end
            outputs[j] = (text, n_tokens)
        if progress is not None:
            progress(len(batch))
    return outputs


def evaluate_cell(model, tokenizer, task, examples, *, model_name: str, seed: int, batch_size: int,
                  max_new_tokens: int | None = None, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Every example of one (model, task) cell as a record (see docs/architecture.md)."""
    prompts = [ex.prompt for ex in examples]
    records = []
    if task.kind == "choice":
        scores = choice_logprobs(model, tokenizer, prompts, task.choices, batch_size, progress=progress)
        for ex, lp in zip(examples, scores):
            predicted = max(task.choices, key=lambda c: lp[c])
            records.append(_record(model_name, seed, task.name, ex, predicted,
                                   len(tokenizer(predicted, add_special_tokens=False)["input_ids"]),
                                   predicted, predicted == ex.gold, json.dumps(lp)))
    else:
        outputs = generate(model, tokenizer, prompts, max_new_tokens or task.max_new_tokens, task.stop, batch_size,
                           progress=progress)
        for ex, (text, n_tokens) in zip(examples, outputs):
            parsed = task.parse(text)
            records.append(_record(model_name, seed, task.name, ex, text, n_tokens, parsed,
                                   parsed is not None and task.is_correct(parsed, ex), ""))
    return records


def _record(model_name, seed, task_name, ex, output, n_tokens, parsed, correct, logprobs) -> dict:
    return {
        "model": model_name, "seed": seed, "task": task_name, "example_id": ex.id, "prompt": ex.prompt,
        "output": output, "output_tokens": int(n_tokens), "parsed": "" if parsed is None else str(parsed),
        "gold": str(ex.gold), "correct": float(bool(correct)), "logprobs": logprobs,
    }
