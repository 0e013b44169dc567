"""Named plug-ins (evaluation backends, executors): the built-in ones and any that an
installed package declares as an entry point, e.g. in its pyproject.toml:

    [project.entry-points."traitmap.backends"]
    vllm = "traitmap_vllm:VLLMBackend"

Both are "module:attribute" references, imported only when a study asks for that name,
so a plug-in's heavy dependencies load only when it is used. A built-in name cannot be
taken by an installed package.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from traitmap.errors import TraitmapError


class Registry:
    """The plug-ins of one kind: `builtin` maps a name to "module:attribute"; `group` is the
    entry-point group other packages add to; `extras` names the pip extra a built-in needs."""

    def __init__(self, kind: str, group: str, builtin: dict[str, str], *, field: str,
                 extras: dict[str, str] | None = None):
        self.kind, self.group, self.builtin, self.field = kind, group, builtin, field
        self.extras = extras or {}

    def entry_points(self) -> dict[str, EntryPoint]:
        found = {point.name: point for point in entry_points(group=self.group)}
        return {**found, **{name: EntryPoint(name, value, self.group) for name, value in self.builtin.items()}}

    def names(self) -> list[str]:
        return sorted(self.entry_points())

    def load(self, name: str):
        """The object registered as `name`, imported now."""
        points = self.entry_points()
        if name not in points:
            raise TraitmapError(f"unknown {self.kind} '{name}' (choose from {', '.join(sorted(points))})",
                                field=self.field)
        try:
            return points[name].load()
        except ModuleNotFoundError as e:  # an optional dependency that is not installed
            install = f": pip install '{self.extras[name]}'" if name in self.extras else ""
            raise TraitmapError(f"the '{name}' {self.kind} needs the {e.name} package{install}",
                                field=self.field) from None
