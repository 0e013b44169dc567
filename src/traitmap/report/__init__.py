"""The study report: one self-contained HTML page per study, readable offline."""

from .build import build_report

__all__ = ["build_report"]
