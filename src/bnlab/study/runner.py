"""``run``: train every (variant, seed) of a study that the store does not hold yet.

For each pending run: build the preset with the variant's options inside
``bnlab.train.seeded(seed)`` -> ``bnlab.train.fit(..., seed=seed)`` -> one committed
transaction in the store. Who trains is the *engine* (:mod:`bnlab.study.engines`), where is the
*executor* (:mod:`bnlab.study.executors`); the driver here is the only writer of the store, and
it commits each outcome before it asks for the next, so ``kill -9`` at any moment loses at most
the runs in flight and the same call afterwards runs exactly the missing ones.

Data are loaded once per study (once per distinct ``[data]`` configuration) before the first run,
so a missing dataset stops the study at once with the loader's :class:`bnlab.errors.DataError`
(plus the spec's ``data.hint``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bnlab._validation import check_positive_int
from bnlab.errors import ConfigError, DataError
from bnlab.study.engines import get_engine
from bnlab.study.executors import get_executor
from bnlab.study.frames import load_runs
from bnlab.study.jobs import RunOutcome, RunRequest
from bnlab.study.keras_engine import choose_engine
from bnlab.study.spec import StudySpec, Variant, load_spec
from bnlab.study.stats import summarize
from bnlab.study.store import Store


@dataclass
class StudyResult:
    """What :func:`run` did and what the study now says.

    ``summary`` is :func:`bnlab.study.stats.summarize` of every stored run of the study,
    ``runs`` the per-run table (:func:`bnlab.study.load_runs`); ``trained`` counts the runs
    trained by this call, ``skipped`` those already in the store; ``seconds`` is this call's
    wall-clock time.
    """

    spec: StudySpec
    store: Path
    study: str
    version: int
    summary: pd.DataFrame
    runs: pd.DataFrame
    trained: int
    skipped: int
    engine: str
    seconds: float
    outcomes: list[RunOutcome] = field(default_factory=list, repr=False)

    @property
    def baseline(self) -> str:
        return self.spec.baseline_name

    @property
    def verdicts(self) -> list[str]:
        return list(self.summary["verdict"]) if "verdict" in self.summary else []

    def __str__(self) -> str:
        lines = [
            f"study {self.study} ({self.store}): {self.trained} run(s) trained, "
            f"{self.skipped} already stored, {self.seconds:.1f} s, engine {self.engine}"
        ]
        return "\n".join(lines + [f"  {v}" for v in self.verdicts])


def run(
    spec_or_path: str | os.PathLike | dict | StudySpec,
    store: str | os.PathLike = "runs.db",
    *,
    engine: str = "auto",
    device: str = "cpu",
    jobs: int = 1,
    new: bool = False,
    data_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
    executor: str = "local",
    executor_options: Mapping[str, Any] | None = None,
) -> StudyResult:
    """Run a study: every (variant, seed) not yet finished in ``store``.

    Parameters
    ----------
    spec_or_path:
        A :class:`StudySpec`, a spec dict, a TOML path, or a built-in study name (``demo``,
        ``seed000`` … ``seed004``; :func:`bnlab.study.builtin_studies`).
    store:
        SQLite file (created when missing). A study name that the store holds with a
        different spec is refused (ConfigError naming the changes) unless ``new=True``, which
        starts the next version of the study in the same store.
    engine:
        ``"sequential"`` (one ``fit`` per run), ``"stacked"`` (many runs at once, when
        installed), or ``"auto"``; see :mod:`bnlab.study.engines`.
    device:
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (passed to ``fit``).
    jobs:
        Worker processes of the local executor (``1`` = in-process).
    data_dir:
        Folder holding datasets (Fashion-MNIST, CIFAR-10, image folders named by a relative
        ``imagefolder:`` path); also taken from the environment variable ``BNLAB_DATA``.
    progress:
        A rich progress bar over runs (and epochs, in-process); ``None`` = when stderr is a
        terminal and ``BNLAB_NO_PROGRESS`` is unset.
    executor:
        ``"local"`` or another executor module (:mod:`bnlab.study.executors`), e.g. ``"ray"``.
    executor_options:
        Passed to the executor's constructor, e.g. ``{"address": "auto"}`` for Ray
        (:class:`bnlab.study.executors.ray.RayExecutor`).
    """
    t0 = time.perf_counter()
    spec = load_spec(spec_or_path)
    jobs = check_positive_int("jobs", jobs)
    if not isinstance(device, str):
        device = str(device)
    if not isinstance(new, bool):
        raise ConfigError(f"new: {new!r} is not True or False")
    variants = {v.name: v for v in spec.expand()}
    pool = get_executor(executor, jobs=jobs, **dict(executor_options or {}))
    if engine != "auto":
        get_engine(engine, (), device)  # fail fast on a bad name, before any data is loaded

    with Store(store) as st:
        ref, _ = st.open_study(
            spec.name, spec.to_dict(), question=spec.question, variants=list(variants), new=new
        )
        done = st.completed(ref)
        pending = [(variants[v], s) for v, s in spec.runs() if (v, s) not in done]
        outcomes: list[RunOutcome] = []
        chosen = "none"
        if pending:
            datasets = _load_datasets(spec, [v for v, _ in pending], data_dir)
            requests = [_request(spec, v, s, datasets[v.data_key]) for v, s in pending]
            trainer = choose_engine(engine, requests, device, datasets)  # user models too
            chosen = trainer.name
            groups = _plan(trainer, requests)
            with (
                _Progress(progress, len(requests), spec) as bar,
                pool.start(
                    datasets,
                    engine=trainer.name,
                    device=device,
                    on_epoch_end=bar.epoch if jobs == 1 else None,
                ) as ex,
            ):
                for group in groups:
                    ex.submit(group)
                for outcome in ex.results():
                    st.record(ref, outcome)
                    outcomes.append(outcome)
                    bar.run_done(outcome)
        runs = load_runs(st, f"{ref.name}@{ref.version}")
    summary = summarize(runs, baseline=spec.baseline_name, target=spec.target_accuracy)
    return StudyResult(
        spec=spec,
        store=Path(store),
        study=ref.label,
        version=ref.version,
        summary=summary,
        runs=runs,
        trained=len(outcomes),
        skipped=len(spec.runs()) - len(pending),
        engine=chosen,
        seconds=time.perf_counter() - t0,
        outcomes=outcomes,
    )


def _plan(trainer: Any, requests: list[RunRequest]) -> list[list[RunRequest]]:
    """The engine's groups, planned per dataset (an engine never sees two datasets at once)."""
    by_data: dict[str, list[RunRequest]] = {}
    for request in requests:
        by_data.setdefault(request.data_key, []).append(request)
    groups = [g for reqs in by_data.values() for g in trainer.plan(reqs)]
    planned = sorted(r.key for g in groups for r in g)
    if planned != sorted(r.key for r in requests):
        raise ConfigError(f"engine: {trainer.name!r} planned a different set of runs than asked")
    return groups


# -- data -----------------------------------------------------------------------------------
def _load_datasets(
    spec: StudySpec, variants: list[Variant], data_dir: str | os.PathLike | None
) -> dict[str, Any]:
    """Each distinct data configuration among ``variants``, loaded once, keyed by data_key."""
    out: dict[str, Any] = {}
    for variant in variants:
        if variant.data_key not in out:
            out[variant.data_key] = load_data(
                variant.data_name,
                variant.data_options,
                data_dir=data_dir,
                hint=spec.data.hint,
                input_shape=_preset_input_shape(variant),
            )
    return out


def _preset_input_shape(variant: Variant) -> tuple[int, ...]:
    from bnlab import models

    options = {**models.preset_options(variant.preset), **variant.model_options}
    return tuple(options.get("input_shape", ()))


def load_data(
    name: str,
    options: dict[str, Any],
    *,
    data_dir: str | os.PathLike | None = None,
    hint: str | None = None,
    input_shape: tuple[int, ...] = (),
):
    """``bnlab.data.load(name, **options)`` as a study loads it.

    * ``data_dir`` (else ``$BNLAB_DATA``) is passed as the loader's ``data_dir`` option to
      datasets that take one, and a relative ``imagefolder:``/``npz:`` path is looked up
      under it first;
    * an image folder is resized to the preset's input ``(H, W)`` unless ``image_size`` is
      given;
    * a :class:`DataError` gets the spec's ``data.hint`` appended; a ConfigError about an
      option is reported as ``data.<option>: ...``.
    """
    from bnlab import data

    options = dict(options)
    root = data_dir if data_dir is not None else os.environ.get("BNLAB_DATA")
    prefix, sep, path = name.partition(":")
    if sep and root and not Path(path).is_absolute():
        candidate = Path(root) / path
        if candidate.exists() or not Path(path).exists():
            name = f"{prefix}:{candidate}"
    if prefix == "imagefolder" and sep and "image_size" not in options and len(input_shape) == 3:
        options["image_size"] = list(input_shape[1:])
    if root is not None and "data_dir" not in options and _accepts(data, name, "data_dir"):
        options["data_dir"] = str(root)
    try:
        return data.load(name, **options)
    except DataError as error:
        text = str(error)
        if hint and hint not in text:
            text = f"{text.rstrip().rstrip('.;')}. {hint}"
        raise DataError(text) from None
    except ConfigError as error:
        text = str(error)
        raise ConfigError(text if text.startswith("data") else f"data.{text}") from None


def _accepts(data_module: Any, name: str, option: str) -> bool:
    """Whether dataset ``name`` takes ``option`` (asks bnlab.data when it can tell)."""
    describe = getattr(data_module, "dataset_options", None)
    if callable(describe):
        try:
            return option in describe(name)
        except (ConfigError, DataError, KeyError):
            return False
    return ":" not in name


def _request(spec: StudySpec, variant: Variant, seed: int, dataset: Any) -> RunRequest:
    return RunRequest(
        study=spec.name,
        variant=variant.name,
        seed=int(seed),
        preset=variant.preset,
        model_options=_fit_to_data(variant, dataset),
        fit_options=variant.train.fit_options(),
        data_key=variant.data_key,
    )


def _fit_to_data(variant: Variant, dataset: Any) -> dict[str, Any]:
    """The variant's model options, with ``num_classes``/``input_shape`` taken from the data
    unless the spec sets them (then they must agree with the data)."""
    from bnlab import models

    valid = models.preset_options(variant.preset)
    options = dict(variant.model_options)
    facts = {"num_classes": dataset.num_classes, "input_shape": tuple(dataset.input_shape)}
    for key, actual in facts.items():
        if key not in valid:
            continue
        if key not in options:
            options[key] = list(actual) if isinstance(actual, tuple) else actual
        elif (tuple(options[key]) if key == "input_shape" else options[key]) != actual:
            where = variant.sources.get(key, f"model.{key}")
            raise ConfigError(
                f"{where}: {options[key]!r} does not match the data ({variant.data_name} has "
                f"{key} {actual!r}); remove it to take it from the data"
            )
    return options


# -- progress -------------------------------------------------------------------------------
class _Progress:
    """Runs (and the current run's epochs) as rich bars on an interactive stderr."""

    def __init__(self, progress: bool | None, total: int, spec: StudySpec):
        from bnlab.train.progress import progress_enabled

        self.enabled = progress_enabled(progress)
        self.total, self.spec = total, spec
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=Console(stderr=True),
            )
            self._bar.__enter__()
            self._runs = self._bar.add_task(f"{self.spec.name} runs", total=self.total, info="")
            self._epochs = self._bar.add_task("  epochs", total=None, info="")
        return self

    def epoch(self, request: RunRequest, epoch: int, logs: dict) -> None:
        if self._bar is None:
            return
        total = request.fit_options.get("epochs")
        acc = logs.get("val_accuracy")
        info = f"{request.variant} seed {request.seed}" + (
            f"  val_acc {acc:.3f}" if acc is not None else ""
        )
        if epoch == 1:  # a new run: restart the epoch bar's clock
            self._bar.reset(self._epochs, total=total)
        self._bar.update(self._epochs, completed=epoch, total=total, info=info)

    def run_done(self, outcome: RunOutcome) -> None:
        if self._bar is None:
            return
        info = f"last: {outcome.request.variant} seed {outcome.request.seed} {outcome.status}"
        self._bar.update(self._runs, advance=1, info=info)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None


__all__ = ["StudyResult", "load_data", "run"]
