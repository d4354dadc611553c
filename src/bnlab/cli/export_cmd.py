"""``bnlab export``: write a model's inference graph to ONNX and prove it computes the same.

The model is put in eval mode (optionally with BN folded, :func:`bnlab.nn.fold_bn`),
exported with ``torch.onnx.export``, run with onnxruntime on the data given, and compared
with PyTorch's own eval-mode outputs. A difference beyond the tolerance (the class of bug
where the exported BN uses batch statistics or another epsilon) fails loudly: exit 1 and
one line with the largest difference. Exit 2: the command could not run (bad model, data,
missing ``onnx`` extra). Needs ``pip install bnlab[onnx]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from bnlab.cli.errors import EXIT_USAGE, report_error
from bnlab.errors import BnlabError, ConfigError, DataError

EXIT_MISMATCH = 1
ModelArg = Annotated[
    str,
    typer.Argument(
        help="module:factory (a function returning a torch model) with --weights FILE.pt.",
        show_default=False,
    ),
]


def _import_onnxruntime():
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
        import onnxruntime
    except ImportError as exc:
        raise ConfigError(
            f"export: {exc.name} is not installed; pip install 'bnlab[onnx]'"
        ) from None
    return onnxruntime


def check_inputs(
    data: str | None, data_options: dict, input_shape: str | None, samples: int, model=None
):
    """The float32 samples to check on: the data's test split (else training split), or
    random normal samples of ``input_shape`` (default: the shape a bnlab model records)."""
    import torch

    if data is not None:
        from bnlab.data import load

        dataset = load(data, **data_options)
        x = dataset.x_test if dataset.x_test is not None and len(dataset.x_test) else None
        x = dataset.x_train if x is None else x
        return torch.as_tensor(x[:samples]).float()
    recorded = (getattr(model, "bnlab_meta", None) or {}).get("input_shape")
    if input_shape is None and recorded is None:
        raise ConfigError("data: none given; pass --data DATA or --input-shape C,H,W")
    try:
        shape = tuple(recorded if input_shape is None else map(int, input_shape.split(",")))
    except ValueError:
        raise ConfigError(f"input-shape: {input_shape!r} is not comma-separated integers") from None
    return torch.randn(samples, *shape, generator=torch.Generator().manual_seed(0))


def export_and_check(model, x, out: Path, *, dynamo: bool = False, rtol=1e-5, atol=1e-5):
    """Export eval-mode ``model`` to ``out``, run it with onnxruntime on ``x``; compare.

    Returns ``(max |difference|, allowed)`` where ``allowed = atol + rtol * max |torch output|``
    (a relative tolerance on the output's scale). The batch axis is dynamic.
    """
    import torch

    ort = _import_onnxruntime()
    model.eval()
    example = x[: min(len(x), 2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters warn about every traced shape check
        kwargs = (
            {"dynamic_shapes": ({0: torch.export.Dim("batch")},)}
            if dynamo
            else {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}}
        )
        with torch.no_grad():
            torch.onnx.export(
                model, (example,), str(out), input_names=["input"], output_names=["output"],
                dynamo=dynamo, **kwargs,
            )  # fmt: skip
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = model(x)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    got = torch.as_tensor(got)
    if got.shape != expected.shape:
        return float("inf"), 0.0
    diff = (got - expected).abs().max().item()
    return diff, atol + rtol * expected.abs().max().item()


def export(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            help="Data to check the export on (a name or path "
            "bnlab.data.load understands); its test split, else its training split.",
        ),
    ] = None,  # fmt: skip
    weights: Annotated[
        Path | None, typer.Option("--weights", "-w", help="State_dict (.pt) for the model.")
    ] = None,
    fold: Annotated[
        bool, typer.Option("--fold", help="Fold BN into the layer before it first.")
    ] = False,
    data_option: Annotated[
        list[str] | None, typer.Option("--data-option", "-O", help="KEY=VALUE for the data.")
    ] = None,
    input_shape: Annotated[
        str | None,
        typer.Option(
            "--input-shape",
            help="Without --data: check on random samples of this shape (C,H,W or F).",
        ),
    ] = None,  # fmt: skip
    samples: Annotated[int, typer.Option("--samples", help="Samples to check on.")] = 256,
    dynamo: Annotated[
        bool, typer.Option("--dynamo", help="Use torch's dynamo exporter (needs onnxscript).")
    ] = False,
) -> None:
    """Export a model's inference graph to ONNX, then check onnxruntime's outputs against torch's.

    Exit 0: written and equal within 1e-5 (relative to the output's scale); 1: written but
    different (one line with the largest difference); 2: could not run.
    """
    try:
        from bnlab.cli.doctor_cmd import parse_data_options
        from bnlab.doctor.loading import load_model

        loaded = load_model(model, weights=weights)
        if any(c.__module__.startswith("keras.") for c in type(loaded).__mro__):
            raise ConfigError(
                f"MODEL: {model!r} is a Keras model; export it with Keras's model.export()"
            )
        x = check_inputs(data, parse_data_options(data_option), input_shape, samples, loaded)
        x = x.to(next(loaded.parameters()).dtype)
        lines = []
        if fold:
            from bnlab.nn import fold_bn

            loaded = fold_bn(loaded)
            lines = loaded.bn_folding.lines()
        try:
            diff, allowed = export_and_check(loaded, x, out, dynamo=dynamo)
        except BnlabError:
            raise
        except Exception as exc:  # noqa: BLE001 - an exporter failure is one line, exit 2
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise DataError(
                f"export: torch.onnx.export failed ({type(exc).__name__}: {first})"
            ) from None
    except BnlabError as exc:
        report_error(exc)
        raise typer.Exit(EXIT_USAGE) from None
    for line in lines:
        typer.echo(line)
    if not diff <= allowed:
        report_error(
            RuntimeError(
                f"ONNX output differs from torch's: max |difference| {diff:.3g} > {allowed:.3g} "
                f"on {len(x)} samples ({out} was written; do not ship it)"
            )
        )
        raise typer.Exit(EXIT_MISMATCH)
    typer.echo(
        f"Wrote {out}; onnxruntime matches torch on {len(x)} samples: "
        f"max |difference| {diff:.3g} (allowed {allowed:.3g})"
    )
