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

import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bnlab._validation import check_positive_int
from bnlab.errors import ConfigError, DataError
from bnlab.study import leases as _leases
from bnlab.study.engines import get_engine
from bnlab.study.executors import get_executor
from bnlab.study.frames import load_runs
from bnlab.study.growth import run_changes
from bnlab.study.jobs import RunOutcome, RunRequest
from bnlab.study.keras_engine import choose_engine
from bnlab.study.leases import Owner, lease_ttl
from bnlab.study.progress import StudyProgress
from bnlab.study.spec import StudySpec, Variant, load_spec
from bnlab.study.spec_hints import keras_order_hint
from bnlab.study.stats import summarize
from bnlab.study.store import Store


@dataclass
class StudyResult:
    """What :func:`run` did and what the study now says.

    ``summary`` is :func:`bnlab.study.stats.summarize` of every stored run of the study,
    ``runs`` the per-run table (:func:`bnlab.study.load_runs`); ``trained`` counts the runs
    trained by this call, ``skipped`` those already in the store; ``seconds`` is this call's
    wall-clock time; ``total`` is the study's number of runs (the rest, :attr:`by_others`,
    were trained meanwhile by other processes sharing the store).
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
    total: int = 0

    @property
    def by_others(self) -> int:
        """Runs that other processes on the same store trained during this call."""
        return max(0, self.total - self.trained - self.skipped)

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
    progress: bool | str | None = None,
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
        SQLite file (created when missing). A study grows in place: added seeds or variants
        and a reworded question keep every stored run (:mod:`bnlab.study.growth`). A change
        that alters a stored run (a model, data or training option of a variant with stored
        runs, a removed variant or seed) is refused (ConfigError naming those changes) unless
        ``new=True``, which starts the next version of the study in the same store. Several
        processes may run the same study on one store at once: each claims a run before it
        trains it (:mod:`bnlab.study.leases`), so they share the work.
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
        ``True``/``"bar"``: rich bars over runs and epochs; ``"lines"``: plain periodic
        lines (logs); ``False``: nothing; ``None``: a bar when stderr is a terminal, lines
        when it is not, nothing when ``BNLAB_NO_PROGRESS`` is set
        (:mod:`bnlab.study.progress`). Ctrl-C raises :class:`StudyInterrupted` (a
        ``KeyboardInterrupt``) saying how many runs the store kept.
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
    _check_device(device, local=executor == "local")
    if not isinstance(new, bool):
        raise ConfigError(f"new: {new!r} is not True or False")
    variants = {v.name: v for v in spec.expand()}
    pool = get_executor(executor, jobs=jobs, **dict(executor_options or {}))
    if engine != "auto":
        get_engine(engine, (), device)  # fail fast on a bad name, before any data is loaded

    with Store(store) as st:
        ref, _ = st.open_study(
            spec.name,
            spec.to_dict(),
            question=spec.question,
            variants=list(variants),
            new=new,
            run_changes=functools.partial(run_changes, spec),
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
            total = len(spec.runs())
            # How many groups one process takes at a time: one per worker on this machine
            # (so other processes on the store can take the rest); a cluster takes them all.
            width = jobs if executor == "local" else len(groups)
            owner, ttl = Owner.this_process(), lease_ttl()
            with StudyProgress(progress, len(requests), spec.name) as bar:
                if done:
                    bar.say(
                        f"resumed: {total - len(pending)} of {total} runs already in the store"
                    )
                bar.say(
                    f"training {len(requests)} run(s) of {spec.name} with engine "
                    f"{trainer.name} on {device}"
                )
                try:
                    with (
                        _leases.Heartbeat(st.path, owner, ttl),
                        pool.start(
                            datasets,
                            engine=trainer.name,
                            device=device,
                            # workers send epochs back only when someone shows them
                            on_epoch_end=bar.epoch if jobs == 1 or bar.mode else None,
                        ) as ex,
                    ):
                        _share(st, ref, ex, groups, width, owner, ttl, bar, outcomes)
                except KeyboardInterrupt:
                    raise StudyInterrupted(len(st.completed(ref)), total, Path(store)) from None
                finally:
                    st.release(ref, owner)
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
        total=len(spec.runs()),
    )


class StudyInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`run`; ``kept`` of ``total`` runs are in the store (resumable)."""

    def __init__(self, kept: int, total: int, store: Path):
        super().__init__(
            f"interrupted: {kept} of {total} runs kept in {store}; run the same command to "
            "continue"
        )
        self.kept, self.total, self.store = kept, total, store


def _share(
    st: Store,
    ref: Any,
    ex: Any,
    groups: list[list[RunRequest]],
    width: int,
    owner: Owner,
    ttl: float,
    bar: StudyProgress,
    outcomes: list[RunOutcome],
) -> None:
    """Train ``groups``, sharing them with any other process working on the same store.

    Claim (lease) free groups until ``width`` are in flight, hand them to the executor and,
    as each outcome comes back, record it (the record drops its lease) and claim the next
    free group. A run another live process holds is left to it; when only such runs are
    left, wait for them (reclaiming any whose process died), so the summary printed at the
    end is the whole study.
    """
    queue = [list(group) for group in groups]
    active: list[set[tuple[str, int]]] = []  # keys of each group in flight, not yet back

    def top_up() -> None:
        nonlocal queue
        taken, rest = [], []
        for group in queue:
            got: set[tuple[str, int]] = set()
            if len(active) + len(taken) < width:
                got = set(st.claim(ref, [r.key for r in group], owner, ttl))
            if got:
                taken.append([r for r in group if r.key in got])
            left = [r for r in group if r.key not in got]
            if left:  # stored or held by another process now: looked at again later
                rest.append(left)
        queue = rest
        if taken:
            bar.started(taken)
        for group in taken:
            active.append({r.key for r in group})
            ex.submit(group)

    waiting_said = False
    while True:
        top_up()
        if active:
            for outcome in ex.results():
                st.record(ref, outcome)  # None: another process stored it first (kept)
                outcomes.append(outcome)
                bar.run_done(outcome)
                for keys in active:
                    keys.discard(outcome.request.key)
                if any(not keys for keys in active):
                    active[:] = [keys for keys in active if keys]
                    top_up()  # a worker is free: give it the next group
            active.clear()
            continue
        stored = st.completed(ref)
        queue = [g for g in ([r for r in group if r.key not in stored] for group in queue) if g]
        if not queue:
            return
        if not waiting_said:
            others = {lease.owner for lease in st.leases(ref) if lease.owner != owner.key}
            n = sum(len(g) for g in queue)
            bar.say(f"waiting: {n} run(s) are being trained by {len(others)} other process(es)")
            waiting_said = True
        time.sleep(min(2.0, ttl / 3))


def _check_device(device: str, *, local: bool) -> None:
    """A bad device name is a one-line ConfigError before anything is loaded. On this
    machine the device must exist; for a cluster executor only the name is checked."""
    from bnlab.train.fit import resolve_device

    cluster_cuda = device.startswith("cuda:") and device[5:].isdigit() or device == "cuda"
    if local or not cluster_cuda:
        resolve_device(device)


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
            hint = keras_order_hint(options[key]) if key == "input_shape" else ""
            raise ConfigError(
                f"{where}: {options[key]!r} does not match the data ({variant.data_name} has "
                f"{key} {actual!r}){hint}; remove it to take it from the data"
            )
    return options


__all__ = ["StudyInterrupted", "StudyResult", "load_data", "run"]
