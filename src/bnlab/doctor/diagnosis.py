"""``Diagnosis``: the findings as data plus their terminal and HTML renderings.

The data lives in :class:`bnlab.doctor.findings.DiagnosisData`; the renderers in
:mod:`bnlab.doctor.render` read that data, and this module joins the two, so findings never
import a renderer.
"""

from __future__ import annotations

from bnlab.doctor import render
from bnlab.doctor.findings import DiagnosisData


class Diagnosis(DiagnosisData):
    """What :func:`bnlab.diagnose` returns; prints itself with rich (``console.print(d)``)."""

    def rich_table(self):
        """A ``rich.table.Table`` with one row per finding."""
        return render.rich_table(self)

    def __rich__(self):
        return render.rich_renderable(self)

    def html(self) -> str:
        """A self-contained ``<section>`` for the HTML report (inline styles, escaped text)."""
        return render.html_section(self)
