"""What a report section is made of: the template renders these and nothing else.

Sections are built in Python (where they can be tested) and handed to one Jinja2
template, so the HTML stays dumb and every dataset string goes through autoescape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import ClassVar

import plotly.graph_objects as go
import plotly.io as pio

# Inside <script>, these characters could end the element or break the parser
# (U+2028/9 are line terminators in older JavaScript); \u escapes are valid JSON.
_SCRIPT_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def script_safe(json_text: str) -> str:
    """JSON text that can sit inside a <script> element without ending it."""
    return json_text.translate(_SCRIPT_ESCAPES)


def to_script_json(obj: object) -> str:
    return script_safe(json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":")))


@dataclass(frozen=True)
class Figure:
    """A plotly figure, serialised once, drawn in the browser by the inlined plotly.js."""

    kind: ClassVar[str] = "figure"
    id: str
    spec: str
    caption: str = ""

    @classmethod
    def of(cls, id: str, fig: go.Figure, caption: str = "") -> Figure:
        return cls(id=id, spec=script_safe(pio.to_json(fig, validate=False)), caption=caption)


@dataclass(frozen=True)
class Table:
    kind: ClassVar[str] = "table"
    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    numeric: bool = True  # right-align every column but the first


@dataclass(frozen=True)
class Details:
    """Collapsed preformatted text, for things worth keeping but not worth reading first."""

    kind: ClassVar[str] = "details"
    summary: str
    text: str


@dataclass(frozen=True)
class Note:
    """One line saying that part of a section could not be drawn, and why."""

    kind: ClassVar[str] = "note"
    text: str


@dataclass
class Section:
    id: str
    title: str
    sentences: list[str] = field(default_factory=list)
    blocks: list = field(default_factory=list)
    findings: list = field(default_factory=list)  # the paper's claims this section's evidence tests
    note: str | None = None  # shown instead of content, e.g. "not computed for this study"
    folded: str | None = None  # a summary line: the blocks stay collapsed under it until clicked
