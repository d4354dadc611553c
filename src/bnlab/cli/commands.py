"""The study commands: ``demo``, ``run``, ``report``, ``list``.

Each is a thin layer over the library — :func:`bnlab.study.run`,
:func:`bnlab.report.render_html`, :func:`bnlab.report.export`,
:mod:`bnlab.report.terminal` — that parses options and prints where things went.
Library imports happen inside the functions so ``bnlab --help`` stays fast.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

LIST_KINDS = ("presets", "datasets", "studies")

StoreOption = Annotated[
    Path, typer.Option("--store", help="SQLite file that keeps every finished run (resumable).")
]
EngineOption = Annotated[
    str,
    typer.Option("--engine", help="auto | sequential | stacked (K models of one shape at once)."),
]
DeviceOption = Annotated[str, typer.Option("--device", help="cpu | cuda | auto.")]
JobsOption = Annotated[
    int, typer.Option("--jobs", help="Runs trained in parallel processes (CPU).")
]


def _console() -> Console:
    return Console(highlight=False)


def _label(result: Any) -> str | None:
    """``name@version`` of the study a :class:`bnlab.study.StudyResult` belongs to."""
    name = getattr(result, "study", None)
    version = getattr(result, "version", None)
    if not isinstance(name, str):
        return None
    if "@" in name or version is None:  # already a label such as "demo@2"
        return name
    return f"{name}@{version}"


def _run_and_summarize(study: str, store: Path, **options: Any):
    """Run (or resume) ``study`` into ``store``, print its summary, return its StudyData."""
    from bnlab.report.source import collect
    from bnlab.report.terminal import print_summary
    from bnlab.study import run
    from bnlab.study.runner import StudyInterrupted

    try:
        result = run(study, store=store, **options)
    except StudyInterrupted as stop:
        Console(stderr=True, highlight=False).print(str(stop), markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    console = _console()
    console.print(escape(_what_happened(result)), soft_wrap=True)
    data = collect(store, _label(result))
    print_summary(data, console=console)
    return data


def _what_happened(result: Any) -> str:
    """``resumed: 40 of 60 runs already in the store; trained 20 of 60 runs in 80.1 s ...``."""
    total = getattr(result, "total", 0) or result.trained + result.skipped
    parts = []
    if result.skipped:
        parts.append(f"resumed: {result.skipped} of {total} runs already in the store")
    if result.trained or not result.skipped:
        parts.append(
            f"trained {result.trained} of {total} runs in {result.seconds:.1f} s "
            f"(engine {result.engine})"
        )
    else:
        parts.append("nothing left to train")
    others = total - result.trained - result.skipped
    if others > 0:
        parts.append(f"{others} trained meanwhile by another process on this store")
    return "; ".join(parts)


def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the HTML report.")
    ] = Path("report.html"),
    store: Annotated[
        Path | None,
        typer.Option(
            "--store", help="Keep the runs in this SQLite file (default: a temporary one)."
        ),
    ] = None,
    engine: EngineOption = "auto",
    device: DeviceOption = "cpu",
    jobs: JobsOption = 1,
    new: Annotated[
        bool, typer.Option("--new", help="With --store: start a new version of the demo study.")
    ] = False,
) -> None:
    """Run the built-in demo study and write its HTML report.

    Digits (8x8, raw 0-255 pixels, a few hundred training images), batch 32, 10 epochs:
    no BN vs BN with Keras's default momentum 0.99 vs BN momentum 0.8, 6 seeds each.
    About 20 seconds on two CPU cores; needs no download. Prints the summary and ends
    with the path of the report.
    """
    from bnlab.report import render_html

    with tempfile.TemporaryDirectory(prefix="bnlab-demo-") as tmp:
        path = store if store is not None else Path(tmp) / "demo.db"
        data = _run_and_summarize("demo", path, engine=engine, device=device, jobs=jobs, new=new)
        if store is None:
            data.store = None  # the temporary store is deleted below: the report must not name it
        written = render_html(data, out)
    console = _console()
    if store is not None:
        console.print(
            escape(f"Runs kept in {store} (re-render with: bnlab report {store} -o {out})."),
            soft_wrap=True,
        )
    console.print(
        f"[bold]Report: {escape(str(written.resolve()))}[/] — open it in a browser.", soft_wrap=True
    )


def run_study(
    study: Annotated[
        str, typer.Argument(help="A study TOML file or a built-in name (bnlab list studies).")
    ],
    store: StoreOption = Path("runs.db"),
    engine: EngineOption = "auto",
    device: DeviceOption = "cpu",
    jobs: JobsOption = 1,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Folder that holds the study's data files.")
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="Start a new version of a study whose spec changed.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the HTML report to this file.")
    ] = None,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="local (this machine) | ray (a Ray cluster; pip install 'bnlab\\[ray]').",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            "--address",
            help="Ray cluster to join (auto, HOST:6379, ray://HOST:10001); default: "
            "RAY_ADDRESS, else a local Ray instance.",
        ),
    ] = None,
) -> None:
    """Train every (variant, seed) of a study not yet finished in the store, then summarize.

    Every finished run is committed to the store before the next starts: interrupt it
    any time and run the same command again to continue.
    """
    options: dict[str, Any] = dict(engine=engine, device=device, jobs=jobs, new=new)
    if address is not None and executor != "ray":
        from bnlab.errors import ConfigError

        raise ConfigError(
            f"address: {address!r} is an option of --executor ray, not of {executor!r}"
        )
    if executor != "local":
        options["executor"] = executor
    if address is not None:
        options["executor_options"] = {"address": address}
    if data_dir is not None:
        options["data_dir"] = data_dir
    data = _run_and_summarize(study, store, **options)
    console = _console()
    if report is not None:
        from bnlab.report import render_html

        written = render_html(data, report)
        console.print(f"[bold]Report: {escape(str(written.resolve()))}[/]", soft_wrap=True)
    else:
        console.print(
            escape(f"Runs in {store}; HTML report: bnlab report {store} -o report.html"),
            soft_wrap=True,
        )


def report(
    store: Annotated[Path, typer.Argument(help="The SQLite store written by bnlab run / demo.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Output file, used as given (default: report.html; STORE.json; "
            "STORE.epochs.csv and STORE.runs.csv).",
        ),
    ] = None,
    format: Annotated[
        str, typer.Option("--format", "-f", help="html | csv | parquet | json.")
    ] = "html",
    study: Annotated[
        str | None,
        typer.Option(
            "--study", help="Which study of the store: NAME or NAME@VERSION (default: latest)."
        ),
    ] = None,
    doctor: Annotated[
        Path | None,
        typer.Option(
            "--doctor", help="Add a Doctor section from a findings file (bnlab doctor --json)."
        ),
    ] = None,
) -> None:
    """Write the HTML report of a study, or export its data (run x epoch and runs tables)."""
    from bnlab._validation import check_choice
    from bnlab.report import FORMATS, export, render_html

    check_choice("format", format, ("html", *FORMATS))
    console = _console()
    if format == "html":
        findings = None if doctor is None else _read_findings(doctor)
        written = render_html(store, out or Path("report.html"), study=study, diagnoses=findings)
        console.print(
            f"[bold]Report: {escape(str(written.resolve()))}[/] — open it in a browser.",
            soft_wrap=True,
        )
        return
    default = store.with_suffix(f".{format}" if format == "json" else f".epochs.{format}")
    paths = export(store, out or default, format, study=study)
    for path in paths:
        console.print(escape(f"Wrote {path}"), soft_wrap=True)


def _read_findings(path: Path) -> list[dict[str, Any]]:
    """Doctor findings from JSON: a list of findings or an object with a ``findings`` list."""
    import json

    from bnlab.errors import DataError

    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"doctor: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"doctor: {str(path)!r} is not JSON ({exc})") from None
    findings = payload.get("findings") if isinstance(payload, dict) else payload
    if not isinstance(findings, list) or not all(isinstance(f, dict) for f in findings):
        raise DataError(
            f"doctor: {str(path)!r} holds no list of findings (expected the output of "
            "bnlab doctor --json)"
        )
    return findings


def list_things(
    what: Annotated[
        str | None, typer.Argument(help="presets | datasets | studies (default: all three).")
    ] = None,
) -> None:
    """List the model presets (input shape, classes), the datasets (shape, classes, default
    pixel scale) and the built-in studies."""
    from bnlab._validation import check_choice
    from bnlab.cli.listing import print_lists

    kinds = LIST_KINDS if what is None else (check_choice("what", what, LIST_KINDS),)
    print_lists(kinds, _console())
