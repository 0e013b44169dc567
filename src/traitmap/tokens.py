"""Prompt token ids, the same for training and for every backend that tokenizes itself."""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=8)
def start_tokens(tokenizer) -> tuple[int, ...]:
    """The ids a tokenizer puts before any text (Gemma: <bos>; SmolLM2: none)."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    return tuple(with_special[: len(with_special) - len(tokenizer("a", add_special_tokens=False)["input_ids"])])


def prompt_ids(tokenizer, text: str, max_tokens: int | None = None) -> list[int]:
    """A prompt's token ids after the tokenizer's own start tokens, keeping the last
    `max_tokens` when it is too long (the start tokens stay)."""
    start = list(start_tokens(tokenizer))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_tokens is not None:
        ids = ids[max(0, len(ids) - (max_tokens - len(start))):]
    return start + ids
