"""``bnlab doctor`` and ``bnlab fix``: the BN doctor on the command line.

Importable on its own: ``app`` is a typer app holding both commands (``bnlab.cli`` picks
them up lazily), and ``doctor``/``fix`` are plain typer-style functions.

Exit status of ``doctor``: 0 healthy, 1 problems found (any warning or error), 2 could
not run (one line on stderr, no traceback). ``fix`` exits 0 on success and 2 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bnlab.cli.errors import EXIT_USAGE, report_error
from bnlab.errors import BnlabError, ConfigError

EXIT_HEALTHY = 0
EXIT_PROBLEMS = 1

app = typer.Typer(
    name="doctor",
    help="Diagnose and repair the batch normalization of a trained model.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)

ModelArg = Annotated[
    str,
    typer.Argument(
        help="A .keras/.h5 Keras file, or module:factory (a function returning a torch or "
        "Keras model) with --weights FILE.pt.",
        show_default=False,
    ),
]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data", "-d", help="Data the model was trained on: a name or path bnlab.data.load "
        "understands (digits, mnist, npz:PATH, imagefolder:PATH, ...).", show_default=False,
    ),
]  # fmt: skip
DataOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data-option", "-O", help="KEY=VALUE passed to bnlab.data.load (repeatable), "
        "e.g. -O scale=raw.", show_default=False,
    ),
]  # fmt: skip
WeightsOpt = Annotated[
    Path | None,
    typer.Option("--weights", "-w", help="State_dict (.pt) for a module:factory model."),
]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Samples per forward pass.")]
MaxBatchesOpt = Annotated[
    int | None, typer.Option("--max-batches", help="Read at most this many batches per pass.")
]


def _value(text: str):
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True; anything else stays a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_data_options(items: list[str] | None) -> dict:
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"data-option: {item!r} is not KEY=VALUE")
        options[key.strip()] = _value(value)
    return options


def load_data(name: str, options: dict):
    from bnlab.data import load

    return load(name, **options)


def doctor(
    model: ModelArg,
    data: DataOpt,
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print the diagnosis as JSON (for `bnlab report --doctor`)."),
    ] = False,
    batch_size: BatchOpt = 256,
    weights: WeightsOpt = None,
    data_option: DataOptionOpt = None,
    max_batches: MaxBatchesOpt = None,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="Training steps the model saw, if it does not record them."),
    ] = None,
    train_batch_size: Annotated[
        int | None, typer.Option("--train-batch-size", help="Batch size used in training.")
    ] = None,
) -> None:
    """Diagnose the batch normalization of a trained model (exit 0 healthy, 1 problems, 2 could not run).

    Compares the model on its training data in train mode and in inference mode, proves
    stale statistics by recalibrating a copy, and checks BN's placement and settings.
    """
    try:
        from bnlab.doctor import diagnose
        from bnlab.doctor.loading import load_model

        loaded = load_model(model, weights=weights)
        dataset = load_data(data, parse_data_options(data_option))
        diagnosis = diagnose(
            loaded, dataset, batch_size=batch_size, max_batches=max_batches, steps=steps,
            train_batch_size=train_batch_size,
        )  # fmt: skip
    except BnlabError as exc:
        report_error(exc)
        raise typer.Exit(EXIT_USAGE) from None
    if json_output:
        typer.echo(diagnosis.to_json())
    else:
        Console(highlight=False).print(diagnosis)
    raise typer.Exit(EXIT_HEALTHY if diagnosis.healthy else EXIT_PROBLEMS)


def fix(
    model: ModelArg,
    data: DataOpt,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Where to write the repaired model (.keras for Keras, "
            "a state_dict .pt for PyTorch).",
            show_default=False,
        ),
    ],  # fmt: skip
    batch_size: BatchOpt = 256,
    weights: WeightsOpt = None,
    data_option: DataOptionOpt = None,
    max_batches: MaxBatchesOpt = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Recalibrate even when the data does not match what the model was trained on.",
        ),
    ] = False,
    freeze: Annotated[
        bool,
        typer.Option(
            "--freeze",
            help="Freeze the BN layers after recalibrating (Keras: trainable=False is saved; "
            "PyTorch: call bnlab.freeze(model) after loading the weights).",
        ),
    ] = False,
) -> None:
    """Recalibrate a trained model's BN statistics on DATA and write the repaired model.

    Prints inference-mode accuracy before and after (training data, and test data when the
    data set has a test split). Only the BN moving mean/variance change.
    """
    try:
        from bnlab.doctor.loading import load_model, save_model
        from bnlab.doctor.recalibrate import repair

        loaded = load_model(model, weights=weights)
        dataset = load_data(data, parse_data_options(data_option))
        result = repair(
            loaded, dataset, batches=max_batches, batch_size=batch_size, in_place=True,
            force=force,
        )  # fmt: skip
        if freeze:
            from bnlab.doctor.freeze import freeze as freeze_bn

            freeze_bn(result.model, what="all")
        written = save_model(result.model, out)
    except BnlabError as exc:
        report_error(exc)
        raise typer.Exit(EXIT_USAGE) from None
    numbers = {
        "out": str(written),
        "bn_layers": result.bn_layers,
        "train_accuracy_before": result.before.accuracy,
        "train_accuracy_after": result.after.accuracy,
        "test_accuracy_before": result.test_before.accuracy if result.test_before else None,
        "test_accuracy_after": result.test_after.accuracy if result.test_after else None,
        "warning": result.warning,
        "frozen": freeze,
    }
    if json_output:
        typer.echo(json.dumps(numbers))
        return
    console = Console(highlight=False)
    if result.warning:
        console.print(f"[bold red]warning:[/] {escape(result.warning)} (--force)", soft_wrap=True)

    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    console.print(
        f"Recalibrated {result.bn_layers} BN layer(s) on {result.before.samples} samples "
        "(exact population statistics).",
        soft_wrap=True,
    )
    console.print(
        f"inference accuracy, training data: {fmt(numbers['train_accuracy_before'])} -> "
        f"{fmt(numbers['train_accuracy_after'])}",
        soft_wrap=True,
    )
    if result.test_before is not None:
        console.print(
            f"inference accuracy, test data:     {fmt(numbers['test_accuracy_before'])} -> "
            f"{fmt(numbers['test_accuracy_after'])}",
            soft_wrap=True,
        )
    if freeze:
        console.print(
            "BN layers frozen (Keras: trainable=False in the saved model; PyTorch: the "
            "state_dict is the same, call bnlab.freeze(model) after loading it).",
            soft_wrap=True,
        )
    console.print(f"Wrote {escape(str(written))}", soft_wrap=True)


app.command(
    "doctor",
    epilog="[bold]Examples[/]\n\n  bnlab doctor model.keras --data digits -O scale=raw\n\n"
    "  bnlab doctor mypkg.nets:build --weights net.pt --data mnist --json",
)(doctor)
app.command(
    "fix",
    epilog="[bold]Examples[/]\n\n  bnlab fix model.keras --data digits -O scale=raw -o fixed.keras\n\n"
    "  bnlab fix mypkg.nets:build --weights net.pt --data mnist -o net.fixed.pt",
)(fix)


def main() -> None:
    """Run the doctor sub-app on its own (``python -m bnlab.cli.doctor_cmd``)."""
    app(prog_name="bnlab")


if __name__ == "__main__":
    main()
