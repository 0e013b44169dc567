"""Assemble the sections into one self-contained HTML page and write it atomically."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from traitmap.findings import of_study
from traitmap.store import write_atomic

from . import analyses, figures, sections
from .blocks import script_safe, to_script_json

TEMPLATES = Path(__file__).parent / "templates"


@lru_cache(maxsize=1)
def _environment() -> Environment:
    # autoescape everywhere: every dataset string reaches the page through the template
    return Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=1)
def _plotly_js() -> Markup:
    js = get_plotlyjs()
    if "</script" in js.lower():  # would end the inline <script> early
        raise RuntimeError("plotly.js contains '</script'; it cannot be inlined")
    return Markup(js)


def render(study) -> str:
    records = study.records()
    parts = [
        sections.study_section(study, records),
        sections.training_section(study),
        sections.matrix_section(study),
        sections.traits_section(study),
        analyses.lengths_section(study),
        analyses.classes_section(study),
        analyses.similarity_section(study),
        analyses.dependency_section(study),
        analyses.controlled_section(study),
        analyses.prediction_section(study),
    ]
    examples, data = sections.examples_section(records)
    parts.append(examples)
    by_id = {part.id: part for part in parts}
    for finding in of_study(study):
        by_id[finding.section].findings.append(finding)
    return _environment().get_template("report.html.j2").render(
        config=study.config,
        meta=dict(study.meta or {}),
        sections=parts,
        glance=sections.glance(study),
        examples_json=Markup(to_script_json(data)),
        template_json=Markup(script_safe(figures.template_json())),
        plotly_js=_plotly_js(),
    )


def build_report(study, out_dir: Path) -> Path:
    """Write `out_dir/report/index.html`; a reader never sees a half-written page."""
    return write_atomic(Path(out_dir) / "report" / "index.html", render(study))
