"""Engines: *how* a group of runs is trained (one ``fit`` per run, or many runs at once).

An engine is any object with

``name: str``
    what the store records for each run it trained;
``plan(requests) -> list[list[request]]``
    split pending runs (all on the same data) into the groups it trains together; each group
    becomes one task of the executor;
``train(group, dataset, *, device, on_epoch_end=None) -> Iterator[(request, History | Exception)]``
    train a group, yielding each run's :class:`bnlab.train.History` (or the exception that
    stopped it) as soon as that run is done. ``on_epoch_end(request, epoch, logs)`` may be
    called after every epoch of every run (progress display).

and optionally

``available(device) -> str | None``
    ``None`` when usable on ``device``, else the reason it is not;
``preferred(requests, device) -> bool``
    whether ``engine="auto"`` should pick it for these runs on this device.

A *request* is a :class:`bnlab.study.jobs.RunRequest`: engines read ``seed``, ``preset``,
``model_options``, ``fit_options`` and ``data_key``, and build each run's initial model with
``request.build()`` so that every engine starts a run from the same weights.

Built in: ``sequential`` (one :func:`bnlab.train.fit` per run) and ``stacked`` (each group
of runs with one architecture trained as one stack by :func:`bnlab.train.stacked.iter_fit_stacked`;
the memory plan and the ``auto`` rule are :mod:`bnlab.train.memory`'s). Other engines come from
:func:`register_engine`. ``engine="auto"`` takes the first registered engine whose
``preferred(...)`` says yes, else ``sequential``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bnlab.errors import ConfigError
from bnlab.registry import Registry
from bnlab.train.memory import prefers_stacked
from bnlab.train.stacked import StackingError, iter_fit_stacked, stack_signature

EpochHook = Callable[[Any, int, dict], None]


class SequentialEngine:
    """One :func:`bnlab.train.fit` call per run, in order (the reference every engine matches)."""

    name = "sequential"

    def plan(self, requests: Sequence) -> list[list]:
        return [[request] for request in requests]

    def available(self, device: str) -> str | None:
        return None

    def train(
        self, group: Sequence, dataset, *, device: str, on_epoch_end: EpochHook | None = None
    ) -> Iterator[tuple[Any, Any]]:
        from bnlab.train import fit

        for request in group:
            try:
                model = request.build()
                hook = None
                if on_epoch_end is not None:
                    hook = _bind(on_epoch_end, request)
                history = fit(
                    model,
                    dataset,
                    seed=request.seed,
                    device=device,
                    progress=False,
                    on_epoch_end=hook,
                    **request.fit_options,
                )
            except Exception as error:  # reported per run; the runner decides what is fatal
                yield request, error
            else:
                yield request, history


def _bind(hook: EpochHook, request) -> Callable[[int, dict], None]:
    return lambda epoch, logs: hook(request, epoch, logs)


#: Fit options a stack may hold per run; every other fit option must be equal in a group.
PER_RUN_FIT_OPTIONS = ("lr",)


def _group_key(request, signature: tuple) -> str:
    shared = {k: v for k, v in request.fit_options.items() if k not in PER_RUN_FIT_OPTIONS}
    return json.dumps([request.preset, repr(signature), shared], sort_keys=True, default=str)


def _vmap_signature(request, model) -> tuple | None:
    """A user's torch model the stacked layers refuse: its ``kernels="vmap"`` signature
    when vmap trains it as ``fit`` does (:func:`bnlab.train.stacked.vmap_refusal`)."""
    from bnlab.train.stacked import vmap_refusal, vmap_settings, vmap_signature

    if not str(request.preset).startswith("user:") or vmap_refusal(model) is not None:
        return None
    return ("vmap", vmap_signature(model), vmap_settings(model))


class StackedEngine:
    """The study engine ``"stacked"``: each group of runs with one architecture and equal
    training settings (learning rates may differ) is trained by
    :func:`bnlab.train.stacked.iter_fit_stacked`.

    A user's torch model the stacked layers refuse stacks with ``kernels="vmap"`` when
    :func:`~bnlab.train.stacked.vmap_refusal` allows it. Other runs whose model cannot be
    stacked (:class:`~bnlab.train.stacked.StackingError`) form groups of one, trained by the
    same engine as a stack of one.
    """

    name = "stacked"

    def __init__(self) -> None:
        self._signatures: dict[str, Any] = {}

    def available(self, device: str) -> str | None:
        return None

    def _signature(self, request) -> Any:
        key = json.dumps([request.preset, request.model_options], sort_keys=True, default=str)
        if key not in self._signatures:
            model = request.build()
            try:
                self._signatures[key] = stack_signature(model)
            except StackingError as error:
                self._signatures[key] = _vmap_signature(request, model) or error
        return self._signatures[key]

    def plan(self, requests: Sequence) -> list[list]:
        groups: dict[str, list] = {}
        singles = []
        for request in requests:
            signature = self._signature(request)
            if isinstance(signature, Exception):
                singles.append([request])
                continue
            groups.setdefault(_group_key(request, signature), []).append(request)
        return [*groups.values(), *singles]

    def preferred(self, requests: Sequence, device: str) -> bool:
        """``auto``: stacked when most runs sit in groups that :func:`prefers_stacked`."""
        if not requests:
            return False
        stacked = 0
        for group in self.plan(requests):
            model = group[0].build()
            batch = int(group[0].fit_options.get("batch_size", 32))
            if prefers_stacked(model, runs=len(group), batch_size=batch, device=device):
                stacked += len(group)
        return stacked * 2 > len(requests)

    def train(
        self, group: Sequence, dataset, *, device: str, on_epoch_end: Callable | None = None
    ) -> Iterator[tuple[Any, Any]]:
        group = list(group)
        finished: set[int] = set()
        try:
            models = [request.build() for request in group]
            options = dict(group[0].fit_options)
            options["lr"] = [request.fit_options.get("lr") for request in group]
            if self._signature(group[0])[0] == "vmap":
                options["kernels"] = "vmap"
            hook = None
            if on_epoch_end is not None:
                hook = lambda run, epoch, logs: on_epoch_end(group[run], epoch, logs)  # noqa: E731
            for run, history in iter_fit_stacked(
                models,
                dataset,
                seeds=[r.seed for r in group],
                device=device,
                progress=False,
                on_epoch_end=hook,
                **options,
            ):
                finished.add(run)
                yield group[run], history
        except Exception as error:  # the stack failed: report it for every run not finished
            for run, request in enumerate(group):
                if run not in finished:
                    yield request, error


_REGISTRY = Registry("engine", {"sequential": SequentialEngine(), "stacked": StackedEngine()})

#: The built-in engine classes by name.
ENGINES = {"sequential": SequentialEngine, "stacked": StackedEngine}


def register_engine(name: str, engine: Any) -> None:
    """Make ``engine`` (an object with ``plan`` and ``train``) available as ``engine=name``
    (a name already registered is a ConfigError)."""
    for attribute in ("plan", "train"):
        if not callable(getattr(engine, attribute, None)):
            raise ConfigError(f"engine: {engine!r} has no {attribute}() method")
    _REGISTRY.register(name, engine)


def _engines() -> dict[str, Any]:
    """Every registered engine by name."""
    return dict(_REGISTRY)


def engine_names() -> list[str]:
    """Every engine name ``run(engine=...)`` accepts, ``auto`` first."""
    return ["auto", *_engines()]


def get_engine(name: str, requests: Sequence = (), device: str = "cpu") -> Any:
    """The engine called ``name`` (``"auto"`` resolves for ``requests`` on ``device``).

    An unknown engine, or one that is not available on ``device``, is a ConfigError that
    says why.
    """
    engines = _engines()
    if name == "auto":
        for candidate_name, candidate in engines.items():
            if candidate_name == "sequential" or not hasattr(candidate, "preferred"):
                continue
            if _available(candidate, device) is None and candidate.preferred(requests, device):
                return candidate
        return engines["sequential"]
    if name not in engines:
        hint = _REGISTRY.hint(name)
        known = ", ".join(["auto", *engines])
        raise ConfigError(f"engine: {name!r} is not available{hint}; engines: {known}")
    reason = _available(engines[name], device)
    if reason is not None:
        raise ConfigError(f"engine: {name!r} cannot run on device {device!r}: {reason}")
    return engines[name]


def _available(engine: Any, device: str) -> str | None:
    check = getattr(engine, "available", None)
    return check(device) if callable(check) else None
