"""The paper's claims tested on finished studies: `evidence` reads a study, `claims` holds
one test per claim, `calibration` reruns each rule on simulated nulls and planted effects,
`render` writes docs/findings.md and the README block."""

from __future__ import annotations

from pathlib import Path

from . import calibration
from .claims import CLAIMS, INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Finding, evaluate
from .evidence import Evidence
from .render import findings_markdown, readme_block, replace_block

__all__ = ["CLAIMS", "Evidence", "calibration", "Finding", "INCONCLUSIVE", "NOT_REPRODUCED", "REPRODUCED", "evaluate",
           "generate", "of_study"]


def generate(folders: list[str], readme: Path | None = None) -> tuple[str, str | None]:
    """(findings.md text, README text with its results block replaced), from study folders
    named as the documents should show them (relative to the repository)."""
    studies = [(Evidence.of_folder(Path(f)), str(f)) for f in folders]
    found = evaluate([ev for ev, _ in studies])
    markdown = findings_markdown(studies, found)
    if readme is None:
        return markdown, None
    return markdown, replace_block(Path(readme).read_text(encoding="utf-8"), readme_block(studies, found), Path(readme))


def of_study(study) -> list[Finding]:
    """The claims this one study can test, for its report."""
    return evaluate([Evidence.of_study(study)])
