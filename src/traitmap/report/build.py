"""Assemble the sections into one self-contained HTML page and write it atomically."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from traitmap.files import write_atomic
from traitmap.findings import of_study
from traitmap.findings.claims import PAPER_TASKS

from . import analyses, figures, sections
from .blocks import Section, script_safe, to_script_json

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


def claims_section(study) -> Section:
    """The paper's claims that this study can test, on the paper's own tasks only: on a
    user's task, a claim about "classification" or "PAWS, Pile" would be read off tasks
    the study does not have."""
    title = "The paper's claims"
    paper_tasks = {task for names in PAPER_TASKS.values() for task in names}
    foreign = [str(t) for t in study.config.targets if t not in paper_tasks]
    if foreign:
        return Section(id="claims", title=title, note=(
            f"Not tested on this study: its target{'s' if len(foreign) > 1 else ''} {', '.join(foreign)} "
            f"{'are' if len(foreign) > 1 else 'is'} not among the paper's tasks; `traitmap findings` tests the claims "
            "on studies of those tasks."))
    found = of_study(study)
    if not found:
        return Section(id="claims", title=title, note="None of the paper's claims can be tested on this study's "
                                                       "adapters and targets.")
    return Section(id="claims", title=title, findings=found, sentences=[
        "Each claim of the paper that this study's adapters and targets can test, with its verdict and the "
        "numbers behind it; the sections above show the evidence."])


def render(study) -> str:
    records = study.records()
    examples, data = sections.examples_section(records)
    parts = [
        sections.answers_section(study),
        sections.matrix_section(study),
        sections.training_section(study),
        sections.traits_section(study),
        analyses.lengths_section(study),
        analyses.classes_section(study),
        analyses.similarity_section(study),
        analyses.dependency_section(study),
        analyses.controlled_section(study),
        analyses.prediction_section(study),
        claims_section(study),
        examples,
        sections.study_section(study, records),
    ]
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
