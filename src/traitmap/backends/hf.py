"""The `hf` backend: transformers, in fp32, with many adapters in one batch.

Choice requests are scored the way lm-evaluation-harness scores multiple choice: the
summed log-probability of each choice after the prompt (one forward per prompt, keeping
only the logits that are read; a choice of several tokens continues from the prompt's
KV cache). Generate requests
are decoded greedily with continuous batching: a finished row leaves the batch at once
and a waiting prompt takes its place, so a batch costs what its rows produce rather
than rows x the longest row. Decoding is plain greedy argmax: the study fixes the
decoding, not the model's generation_config.

Rows of different adapters share a batch: each row's LoRA update is its own
(`backends.lora`), added to the frozen base model's output.

Why results do not depend on what shares a batch: everything runs in fp32, prompts are
left-padded with explicit position ids and padded positions are masked, and each row's
LoRA update is computed from that row alone. (bf16 flips about half the greedy outputs
between batchings on a CPU, so evaluation never uses it.)
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from traitmap.backends.base import MAX_PROMPT_TOKENS, AdapterRef, Backend, Progress, Request, Response
from traitmap.backends.lora import AdapterBank
from traitmap.errors import TraitmapError
from traitmap.tokens import prompt_ids

BASE = 0  # the adapter slot of the base model


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


def positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


@dataclass
class _Row:
    """One generate request while it is decoded."""

    index: int
    prompt: list[int]
    adapter: int
    max_new_tokens: int
    stop: tuple[str, ...]
    new: list[int] = field(default_factory=list)


class HFBackend(Backend):
    def __init__(self, model_dir: Path, *, batch_size: int = 16):
        from traitmap.models import load_model, load_tokenizer

        super().__init__(model_dir, batch_size=batch_size)
        self.tokenizer = load_tokenizer(self.model_dir)
        self.model = load_model(self.model_dir)
        self.bank = AdapterBank(self.model)
        self._choice_ids: dict[str, list[int]] = {}
        # transformers renamed `past_key_values` to `cache` (5.24 warns; older versions know only the first)
        self._cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    # adapters ----------------------------------------------------------------------------
    def adapter_slot(self, ref: AdapterRef | None) -> int:
        """The adapter's slot in the bank, loading it on first use; BASE for the base model.

        A failed or partial load is an error, never a silent fall-back to the base model
        (the authors' code had that bug).
        """
        if ref is None:
            return BASE
        key = f"{ref.name}/{ref.seed}/{Path(ref.path).resolve()}"
        if key in self.bank.slots:
            return self.bank.slots[key]
        try:
            return self.bank.load(key, Path(ref.path))
        except TraitmapError as e:
            raise TraitmapError(f"adapter '{ref.name}' (seed {ref.seed}) is not usable: {e}") from None
        except Exception as e:  # noqa: BLE001 -- any load failure names the adapter
            raise TraitmapError(f"adapter '{ref.name}' (seed {ref.seed}) failed to load: {e}", file=ref.path) from None

    def _forward(self, adapters: list[int], **inputs):
        """One forward pass, each row through its own adapter (or none)."""
        self.bank.route(adapters)
        return self.model(**inputs)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # the interface -----------------------------------------------------------------------
    @torch.inference_mode()
    def answer(self, requests: Sequence[Request], progress: Progress | None = None) -> Iterator[tuple[int, Response]]:
        adapters = [self.adapter_slot(r.adapter) for r in requests]  # every adapter loads (or fails) first
        choice = [i for i, r in enumerate(requests) if r.kind == "choice"]
        generate = [i for i, r in enumerate(requests) if r.kind == "generate"]
        if choice:
            yield from self._score([requests[i] for i in choice], [adapters[i] for i in choice], choice, progress)
        if generate:
            yield from self._generate([requests[i] for i in generate], [adapters[i] for i in generate], generate, progress)

    # choice ------------------------------------------------------------------------------
    def _token_ids(self, text: str) -> list[int]:
        if text not in self._choice_ids:
            self._choice_ids[text] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self._choice_ids[text]

    def _score(self, requests: list[Request], adapters: list[int], indices: list[int], progress: Progress | None):
        """Summed log-probability of each choice. Each prompt runs once: its last position
        scores every choice's first token; a choice of several tokens continues from the
        prompt's KV cache (lm-eval runs the prompt again for every choice). Batches hold
        prompts of similar length."""
        from transformers import DynamicCache

        prompts = [prompt_ids(self.tokenizer, r.prompt, MAX_PROMPT_TOKENS) for r in requests]
        order = sorted(range(len(requests)), key=lambda j: len(prompts[j]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            ids, mask = (t.to(self.device) for t in left_pad([prompts[j] for j in batch], self.tokenizer.pad_token_id))
            longer = [(row, c) for row, j in enumerate(batch) for c in requests[j].choices if len(self._token_ids(c)) > 1]
            cache = DynamicCache() if longer else None
            logits = self._forward([adapters[j] for j in batch], input_ids=ids, attention_mask=mask,
                                   position_ids=positions(mask), logits_to_keep=1,
                                   **({self._cache_arg: cache, "use_cache": True} if longer else {})).logits
            first = torch.log_softmax(logits[:, -1].float(), dim=-1)
            rest = self._continuations(cache, mask, longer, [adapters[j] for j in batch]) if longer else {}
            for row, j in enumerate(batch):
                r = requests[j]
                scores = {c: first[row, self._token_ids(c)[0]].item() + rest.get((row, c), 0.0) for c in r.choices}
                yield indices[j], Response(logprobs=scores, choice_tokens={c: len(self._token_ids(c)) for c in r.choices})
            if progress is not None:
                progress(len(batch))

    def _continuations(self, cache, mask: torch.Tensor, longer: list[tuple[int, str]], adapters: list[int]) -> dict:
        """log p(choice tokens 2..n | prompt, token 1..n-1) for each (prompt row, choice), from
        the prompts' KV cache: the choice tokens are right-padded after their prompt."""
        from transformers import DynamicCache

        rows = [row for row, _ in longer]
        choice_ids = [self._token_ids(c) for _, c in longer]
        width = max(len(c) for c in choice_ids) - 1
        ids = torch.full((len(longer), width), self.tokenizer.pad_token_id, dtype=torch.long)
        valid = torch.zeros((len(longer), width), dtype=torch.long)
        for i, c in enumerate(choice_ids):
            ids[i, :len(c) - 1] = torch.tensor(c[:-1])
            valid[i, :len(c) - 1] = 1
        prompt_mask = mask[rows]
        start = prompt_mask.sum(-1, keepdim=True)
        repeated = DynamicCache()
        for layer, old in enumerate(cache.layers):
            repeated.update(old.keys[rows], old.values[rows], layer)
        logits = self._forward([adapters[row] for row in rows], input_ids=ids.to(self.device),
                               attention_mask=torch.cat([prompt_mask, valid.to(self.device)], dim=1),
                               position_ids=start + torch.arange(width, device=self.device),
                               **{self._cache_arg: repeated}, use_cache=True).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        # token t (t >= 1) of a choice is predicted at continuation position t - 1
        return {(row, c): sum(logp[i, t - 1, tok].item() for t, tok in enumerate(choice_ids[i]) if t >= 1)
                for i, (row, c) in enumerate(longer)}

    # generate ----------------------------------------------------------------------------
    def _generate(self, requests: list[Request], adapters: list[int], indices: list[int], progress: Progress | None):
        """Greedy decoding with continuous batching over a KV cache.

        Up to `batch_size` rows are in flight. Waiting prompts (shortest first) are
        prefilled as a batch once a quarter of the slots are free, then their cache is
        left-padded onto the running one; finished rows are dropped from it.
        """
        from transformers import DynamicCache

        tok = self.tokenizer
        stop_ids = {tok.eos_token_id, tok.pad_token_id}
        waiting = sorted(
            (_Row(j, prompt_ids(tok, r.prompt, MAX_PROMPT_TOKENS), adapters[j], r.max_new_tokens, r.stop)
             for j, r in enumerate(requests)),
            key=lambda row: len(row.prompt), reverse=True,
        )
        active: list[_Row] = []
        cache, mask = None, None
        refill_at = max(1, self.batch_size // 4)
        while waiting or active:
            if waiting and (self.batch_size - len(active) >= refill_at or not active):
                new = [waiting.pop() for _ in range(min(self.batch_size - len(active), len(waiting)))]
                ids, new_mask = (t.to(self.device) for t in left_pad([row.prompt for row in new], tok.pad_token_id))
                new_cache = DynamicCache()
                logits = self._forward([row.adapter for row in new], input_ids=ids, attention_mask=new_mask,
                                       position_ids=positions(new_mask), **{self._cache_arg: new_cache}, use_cache=True,
                                       logits_to_keep=1).logits
                cache, mask = _join(cache, mask, new_cache, new_mask)
                active += new
                # the new rows just took their first step; the rows in flight take theirs next time round
                _append(new, logits[:, -1].argmax(-1).tolist())
            else:
                last = torch.tensor([[row.new[-1]] for row in active], device=self.device)
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                position = (mask.sum(-1, keepdim=True) - 1)
                logits = self._forward([row.adapter for row in active], input_ids=last, attention_mask=mask,
                                       position_ids=position, **{self._cache_arg: cache}, use_cache=True,
                                       logits_to_keep=1).logits
                _append(active, logits[:, -1].argmax(-1).tolist())
            done = [i for i, row in enumerate(active) if self._finished(row, stop_ids)]
            if not done:
                continue
            for i in done:
                row = active[i]
                yield indices[row.index], self._response(row, stop_ids)
            if progress is not None:
                progress(len(done))
            finished = set(done)
            keep = [i for i in range(len(active)) if i not in finished]
            active = [active[i] for i in keep]
            if active:
                cache, mask = _select(cache, mask, keep)
            else:
                cache, mask = None, None

    def _finished(self, row: _Row, stop_ids: set[int]) -> bool:
        if row.new[-1] in stop_ids or len(row.new) >= row.max_new_tokens:
            return True
        if not row.stop:
            return False
        # A stop string ends within the last few tokens; earlier ones were checked before.
        longest = max(len(s) for s in row.stop)
        tail = self.tokenizer.decode(row.new[-(longest + 2):], skip_special_tokens=True)
        return any(s in tail for s in row.stop)

    def _response(self, row: _Row, stop_ids: set[int]) -> Response:
        """The text before the end of text and before the first stop string, and its length in tokens."""
        end = next((t for t, tok in enumerate(row.new) if tok in stop_ids), len(row.new))
        text = self.tokenizer.decode(row.new[:end], skip_special_tokens=True)
        cut = min((text.index(s) for s in row.stop if s in text), default=None)
        if cut is None:
            return Response(text=text, tokens=end)
        text = text[:cut]
        return Response(text=text, tokens=len(self.tokenizer(text, add_special_tokens=False)["input_ids"]))


def _append(rows: list[_Row], tokens: list[int]) -> None:
    for row, token in zip(rows, tokens):
        row.new.append(token)


def _join(cache, mask, new_cache, new_mask):
    """The running batch's KV cache with new rows below it, both left-padded to one width.

    The newest token of a running row is not in its cache yet (it is the next input), so
    the running rows' mask ends one column before their next step's, like the new rows'.
    """
    from transformers import DynamicCache

    if cache is None:
        return new_cache, new_mask
    width = max(mask.shape[1], new_mask.shape[1])
    joined = DynamicCache()
    for layer, (old, new) in enumerate(zip(cache.layers, new_cache.layers)):
        keys = torch.cat([_pad_left(old.keys, width), _pad_left(new.keys, width)], dim=0)
        values = torch.cat([_pad_left(old.values, width), _pad_left(new.values, width)], dim=0)
        joined.update(keys, values, layer)
    mask = torch.cat([_pad_left(mask, width, dim=1), _pad_left(new_mask, width, dim=1)], dim=0)
    return joined, mask


def _pad_left(t: torch.Tensor, width: int, dim: int = 2) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _select(cache, mask, keep: list[int]):
    """Only the rows in `keep`, without the leading columns that are padding in all of them."""
    from transformers import DynamicCache

    mask = mask[keep]
    first = int((mask.sum(0) > 0).nonzero()[0])
    kept = DynamicCache()
    for layer, old in enumerate(cache.layers):
        kept.update(old.keys[keep, :, first:], old.values[keep, :, first:], layer)
    return kept, mask[:, first:]
