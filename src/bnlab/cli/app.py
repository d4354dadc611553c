"""The ``bnlab`` typer application: command registration, ``--version``, error policy."""

from __future__ import annotations

from typing import Annotated

import typer
from typer.core import TyperCommand, TyperGroup

from bnlab.cli import commands
from bnlab.cli.errors import exit_on_bnlab_error
from bnlab.cli.lazy import DOCTOR_COMMANDS, LazyCommand, load_command
from bnlab.errors import BnlabError


class BnlabGroup(TyperGroup):
    """The root command group.

    * A :class:`~bnlab.errors.BnlabError` escaping any command becomes one red line
      on stderr and exit status 2 (see :mod:`bnlab.cli.errors`).
    * ``doctor`` and ``fix`` are loaded from :mod:`bnlab.cli.doctor_cmd` on first use
      (see :mod:`bnlab.cli.lazy`).
    """

    _lazy = {s.name: s for s in (*DOCTOR_COMMANDS, LazyCommand("export", "bnlab.cli.export_cmd", "Export a model to ONNX and check onnxruntime against torch."))}  # fmt: skip

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = super().list_commands(ctx)
        return names + [name for name in self._lazy if name not in names]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> TyperCommand | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in self._lazy:
            command = load_command(self._lazy[cmd_name])
            self.add_command(command, cmd_name)
        return command

    def invoke(self, ctx: typer.Context):
        try:
            return super().invoke(ctx)
        except BnlabError as exc:
            raise exit_on_bnlab_error(exc) from None


HELP = (
    "bnlab — a laboratory and a doctor for batch normalization.\n\n"
    "Studies train every variant of a model under many seeds and report, with confidence "
    "intervals, what BN did; the doctor names what is wrong with the BN of a trained model."
)
EPILOG = (
    "[bold]Examples[/]\n\n"
    "  bnlab demo                         [dim]# 3 variants x 5 seeds on digits, writes report.html[/]\n\n"
    "  bnlab list studies\n\n"
    "  bnlab run seed004 --store runs.db  [dim]# a built-in study; resumable[/]\n\n"
    "  bnlab report runs.db -o report.html\n\n"
    "  bnlab doctor model.keras --data digits"
)

app = typer.Typer(
    name="bnlab",
    cls=BnlabGroup,
    help=HELP,
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from bnlab import __version__

        typer.echo(f"bnlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """bnlab — a laboratory and a doctor for batch normalization."""


app.command(
    "demo",
    epilog="[bold]Examples[/]\n\n  bnlab demo\n\n  bnlab demo -o /tmp/demo.html --store demo.db",
)(commands.demo)
app.command(
    "run",
    epilog=(
        "[bold]Examples[/]\n\n"
        "  bnlab run seed004                            [dim]# built-in study, store runs.db[/]\n\n"
        "  bnlab run my_study.toml --store my.db --report report.html\n\n"
        "  bnlab run seed002 --data-dir ../shared/data  [dim]# real Fashion-MNIST from a folder[/]\n\n"
        "  bnlab run seed004 --engine stacked --device cuda\n\n"
        "  bnlab run seed002 & bnlab run seed002     [dim]# two processes share one store's runs[/]\n\n"
        "  bnlab run seed004 --executor ray --address auto  [dim]# on a Ray cluster[/]"
    ),
)(commands.run_study)
app.command(
    "report",
    epilog=(
        "[bold]Examples[/]\n\n"
        "  bnlab report runs.db -o report.html\n\n"
        "  bnlab report runs.db --format csv -o results.csv  [dim]# results.csv + results.runs.csv[/]\n\n"
        "  bnlab report runs.db --study seed004@2 --format json\n\n"
        "  bnlab report runs.db --doctor findings.json  [dim]# findings: bnlab doctor ... --json[/]"
    ),
)(commands.report)
app.command(
    "list",
    epilog="[bold]Examples[/]\n\n  bnlab list\n\n  bnlab list studies",
)(commands.list_things)


def main() -> None:
    """Entry point of the ``bnlab`` console script and of ``python -m bnlab``."""
    app(prog_name="bnlab")
