"""Executors schedule a study's jobs: `local` runs them in this process, `ray` on a cluster.

An executor takes jobs (traitmap.jobs) and yields their results as they finish; it
never writes the output directory. Adding one is a new module here and a line in
BUILTIN; the study logic, the store, the analyses and the report do not change.
"""

from __future__ import annotations

import importlib

from traitmap.errors import TraitmapError

BUILTIN = {"local": "traitmap.executors.local:LocalExecutor", "ray": "traitmap.executors.ray:RayExecutor"}


def names() -> list[str]:
    return list(BUILTIN)


def get(name: str, **options):
    """A ready executor by name; `options` go to its constructor (e.g. a Ray address)."""
    if name not in BUILTIN:
        raise TraitmapError(f"unknown executor '{name}' (choose from {', '.join(BUILTIN)})", field="executor")
    module, cls = BUILTIN[name].split(":")
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as e:  # an optional extra that is not installed
        raise TraitmapError(f"the '{name}' executor needs the {e.name} package: pip install 'traitmap[{name}]'",
                            field="executor") from None
    return getattr(found, cls)(**options)
