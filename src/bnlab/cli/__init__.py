"""The ``bnlab`` command line (typer): ``demo``, ``list``, ``run``, ``report``, ``doctor``, ``fix``.

A thin layer over the library; see ``bnlab --help`` and ``bnlab COMMAND --help``.
Errors bnlab raises on purpose print one red line and exit with status 2.
"""

from __future__ import annotations

from bnlab.cli.app import app, main

__all__ = ["app", "main"]
