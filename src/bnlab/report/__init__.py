"""Reports of a study: one self-contained HTML file, data exports, a terminal summary.

* :func:`render_html` — the HTML report (question, summary table, verdicts,
  learning curves with 95 % bands, final-accuracy distribution, diverged/failed
  runs, optional doctor findings, spec and versions). No network needed to view it.
* :func:`export` — the run x epoch table and the runs table as CSV, Parquet or JSON.
* :mod:`bnlab.report.terminal` — the same summary as a rich table.

Accuracies are stored as fractions in [0, 1]; reports show percent and
percentage points ("pts").
"""

from __future__ import annotations

from bnlab.report.export import FORMATS, export
from bnlab.report.render import render_html
from bnlab.report.source import StudyData, collect

__all__ = ["FORMATS", "StudyData", "collect", "export", "render_html"]
