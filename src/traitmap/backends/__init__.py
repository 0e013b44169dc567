"""Engines that answer evaluation requests, by name (`[eval] backend`).

A new engine is a `Backend` subclass named in BACKENDS, or, from a separately installed
package, in its `traitmap.backends` entry points (traitmap.plugins). Its constructor takes
the model folder, `batch_size` ([eval] batch_size) and, as keyword arguments, the study's
`[eval] backend_args` (and `--backend-arg`). The study logic, the store, the analyses and
the report do not change.
"""

from __future__ import annotations

import inspect

from traitmap.backends.base import AdapterRef, Backend, Request, Response
from traitmap.errors import TraitmapError
from traitmap.plugins import Registry

__all__ = ["AdapterRef", "Backend", "Request", "Response", "check_args", "get", "names", "resolve_name"]

BACKENDS = Registry("backend", "traitmap.backends", {"hf": "traitmap.backends.hf:HFBackend"}, field="eval.backend")
# Constructor arguments that traitmap passes itself: not backend_args.
RESERVED_ARGS = ("model_dir", "batch_size")


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


def check_args(name: str, args: dict) -> None:
    """The backend's constructor takes every one of `args` and needs no other: checked
    before a run writes anything, so that a misspelt argument never reaches a worker."""
    parameters = inspect.signature(get(name)).parameters.values()
    named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in RESERVED_ARGS]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    takes = ", ".join(p.name for p in named) or "none"
    for key in args:
        if key in RESERVED_ARGS or not (takes_any or key in {p.name for p in named}):
            raise TraitmapError(f"the '{resolve_name(name)}' backend takes no argument '{key}' (it takes: {takes})",
                                field=f"eval.backend_args.{key}")
    missing = [p.name for p in named if p.default is p.empty and p.name not in args]
    if missing:
        raise TraitmapError(f"the '{resolve_name(name)}' backend needs the argument '{missing[0]}': set it in "
                            "[eval] backend_args or pass --backend-arg", field="eval.backend_args")
