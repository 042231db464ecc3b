"""Comparison reports: finished studies -> reports/<study>/ (index.html, README.md, PNGs, results.csv, summary.json)."""

from .compare import report_differences, table_texts
from .data import StudyData, load_study_data
from .render import build_report

__all__ = ["StudyData", "build_report", "load_study_data", "report_differences", "table_texts"]
