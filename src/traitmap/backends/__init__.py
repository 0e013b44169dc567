"""Engines that answer evaluation requests, by name (`[eval] backend`).

A new engine is a `Backend` subclass named in BACKENDS, or, from a separately installed
package, in its `traitmap.backends` entry points (traitmap.plugins). Its constructor takes
the model folder and `batch_size` ([eval] batch_size). The study logic, the store, the
analyses and the report do not change.
"""

from __future__ import annotations

from traitmap.backends.base import AdapterRef, Backend, Request, Response
from traitmap.errors import TraitmapError
from traitmap.plugins import Registry

__all__ = ["AdapterRef", "Backend", "Request", "Response", "get", "names", "resolve_name"]

BACKENDS = Registry("backend", "traitmap.backends", {"hf": "traitmap.backends.hf:HFBackend"}, field="eval.backend")


def names() -> list[str]:
    return sorted({"auto", *BACKENDS.names()})


def resolve_name(name: str) -> str:
    """`auto` is the best engine for this machine: today `hf` everywhere (see BENCHMARKS.md)."""
    return "hf" if name == "auto" else name


def get(name: str) -> type[Backend]:
    found = BACKENDS.load(resolve_name(name))
    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise TraitmapError(f"backend '{name}' is {found!r}, not a traitmap Backend class", field="eval.backend")
    return found

