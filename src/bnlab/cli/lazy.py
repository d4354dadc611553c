"""Commands that live in other modules and are imported only when used.

``bnlab doctor`` and ``bnlab fix`` are defined in :mod:`bnlab.cli.doctor_cmd`
(the doctor's own module). They are loaded the first time a command line or a
help page needs them, so ``bnlab list`` or ``bnlab run`` never pay for the
doctor's imports and keep working when the doctor cannot be imported — the
doctor commands then say why, on one line, and exit 2.

The module may expose either a ``typer.Typer`` named ``app`` holding the
commands, or plain typer-style functions named after them (``doctor``, ``fix``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import typer
from typer.core import TyperCommand

from bnlab.cli.errors import EXIT_USAGE, one_line, report_error


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives and the one-line help shown when it cannot be loaded."""

    name: str
    module: str
    help: str


DOCTOR_COMMANDS = (
    LazyCommand(
        "doctor",
        "bnlab.cli.doctor_cmd",
        "Diagnose the batch normalization of a trained model (exit 0 healthy, 1 problems, "
        "2 could not run).",
    ),
    LazyCommand(
        "fix",
        "bnlab.cli.doctor_cmd",
        "Recalibrate a trained model's BN statistics and write the repaired model.",
    ),
)


def load_command(spec: LazyCommand) -> TyperCommand:
    """The click command ``spec`` names, or a stand-in that explains why it is unavailable."""
    try:
        module = importlib.import_module(spec.module)
        command = _find(module, spec.name)
    except Exception as exc:  # noqa: BLE001 - any import failure must not break the CLI
        return unavailable(spec, f"{type(exc).__name__}: {exc}")
    if command is None:
        return unavailable(spec, f"{spec.module} defines no {spec.name!r} command")
    return command


def _find(module, name: str) -> TyperCommand | None:
    app = getattr(module, "app", None)
    if isinstance(app, typer.Typer):
        command = typer.main.get_command(app)
        subcommands = getattr(command, "commands", None)
        if subcommands is not None:  # a group: pick the command by name
            return subcommands.get(name)
        if command.name == name:
            return command
    function = getattr(module, name, None)
    if callable(function):
        single = typer.Typer(add_completion=False)
        single.command(name)(function)
        command = typer.main.get_command(single)
        command.name = name
        return command
    return None


def unavailable(spec: LazyCommand, reason: str) -> TyperCommand:
    """A command that accepts any arguments, prints why ``spec`` cannot run and exits 2."""
    stub = typer.Typer(add_completion=False)

    @stub.command(
        spec.name,
        help=f"{spec.help} (unavailable here: {one_line(reason)})",
        short_help=f"{spec.help} [unavailable]",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def _unavailable(ctx: typer.Context) -> None:
        report_error(RuntimeError(f"bnlab {spec.name} is unavailable: {one_line(reason)}"))
        raise typer.Exit(EXIT_USAGE)

    command = typer.main.get_command(stub)
    command.name = spec.name
    return command
