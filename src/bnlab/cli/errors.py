"""How the command line reports errors.

An error bnlab raises on purpose (:class:`bnlab.errors.BnlabError`: ConfigError,
DataError, UnsafeFileError, ...) is the user's to fix, and its message already
names the parameter, the value and what is allowed — so it is printed as ONE red
line on stderr and the command exits with status 2, without a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.text import Text

from bnlab.errors import BnlabError

#: Exit status of a command that could not run (bad settings, missing data, unsafe file).
EXIT_USAGE = 2


def one_line(message: str) -> str:
    """Collapse whitespace so a message prints as a single line."""
    return " ".join(str(message).split())


def report_error(exc: BaseException) -> None:
    """Print ``error: <message>`` in red on stderr, on one line (never wrapped by rich)."""
    console = Console(stderr=True, highlight=False)
    console.print(Text(f"error: {one_line(str(exc))}", style="bold red"), soft_wrap=True)


def exit_on_bnlab_error(exc: BnlabError) -> typer.Exit:
    """Report ``exc`` and return the ``typer.Exit(2)`` to raise."""
    report_error(exc)
    return typer.Exit(EXIT_USAGE)
