"""The one interface between tasks and engines: requests in, responses out.

As in lm-evaluation-harness, tasks build requests and score the responses; a backend
only answers. As in vLLM's `LoRARequest`, the adapter a request is for rides with the
request instead of being engine state, so one backend call can batch many adapters.

A backend must give every request the same answer whatever else is in the call: that
is what keeps a study's results independent of batching, of the order cells run in and
of the executor. This module holds no engine code.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Prompts keep their last tokens when longer than this (the start tokens stay).
MAX_PROMPT_TOKENS = 1024


@dataclass(frozen=True)
class AdapterRef:
    """A trained adapter: its study name and seed, and the folder holding it (PEFT format)."""

    name: str
    seed: int
    path: Path


@dataclass(frozen=True)
class Request:
    """One prompt for one model. `adapter` None means the base model.

    A choice request scores each of `choices` as a continuation of the prompt; a
    generate request decodes greedily up to `max_new_tokens`, stopping at the end of
    text or at the first of `stop`.
    """

    prompt: str
    adapter: AdapterRef | None = None
    choices: tuple[str, ...] = ()
    max_new_tokens: int = 0
    stop: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "choice" if self.choices else "generate"


@dataclass(frozen=True)
class Response:
    """A choice request's summed log-probability and token count per choice, or a generate
    request's text (cut before the first stop string) and its length in tokens."""

    logprobs: dict[str, float] = field(default_factory=dict)
    choice_tokens: dict[str, int] = field(default_factory=dict)
    text: str = ""
    tokens: int = 0


Progress = Callable[[int], None]  # called with the number of requests just answered


class Backend(ABC):
    """An engine that answers requests for one base model and any of its adapters. A
    subclass takes its own settings (`[eval] backend_args`) as keyword arguments."""

    def __init__(self, model_dir: Path, *, batch_size: int = 16):
        self.model_dir = Path(model_dir)
        self.batch_size = batch_size

    @abstractmethod
    def answer(self, requests: Sequence[Request], progress: Progress | None = None) -> Iterator[tuple[int, Response]]:
        """Every request's response, as soon as it is ready, in any order: (index, response)."""
