"""Engines that answer evaluation requests, registered by name (`[eval] backend`).

A new engine is one new module whose backend class is decorated with
`@register("name")`; list it in BUILTIN so that it is imported (with its heavy
dependencies) only when a study asks for it. The study logic, the store, the
analyses and the report do not change.
"""

from __future__ import annotations

import importlib

from traitmap.backends.base import AdapterRef, Backend, Request, Response, register, registered
from traitmap.errors import TraitmapError

__all__ = ["AdapterRef", "Backend", "Request", "Response", "get", "names", "register", "resolve_name"]

BUILTIN = {"hf": "traitmap.backends.hf"}


def names() -> list[str]:
    return sorted({"auto", *BUILTIN, *registered()})


def resolve_name(name: str) -> str:
    """`auto` is the best engine for this machine: today `hf` everywhere (see BENCHMARKS.md)."""
    return "hf" if name == "auto" else name


def get(name: str) -> type[Backend]:
    name = resolve_name(name)
    if name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    found = registered().get(name)
    if found is None:
        raise TraitmapError(f"unknown backend '{name}' (choose from {', '.join(names())})", field="eval.backend")
    return found
