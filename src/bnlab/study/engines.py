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

Built in: ``sequential`` (one :func:`bnlab.train.fit` per run). Other engines come from
:func:`register_engine` or, lazily, from a mapping ``ENGINES = {name: engine}`` in the module
``bnlab.train.engines`` when that module exists (that is where the stacked engine plugs in
without :mod:`bnlab.train` importing :mod:`bnlab.study`). ``engine="auto"`` takes the first
registered engine whose ``preferred(...)`` says yes, else ``sequential``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError

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


_REGISTRY: dict[str, Any] = {"sequential": SequentialEngine()}


def register_engine(name: str, engine: Any) -> None:
    """Make ``engine`` (an object with ``plan`` and ``train``) available as ``engine=name``."""
    for attribute in ("plan", "train"):
        if not callable(getattr(engine, attribute, None)):
            raise ConfigError(f"engine: {engine!r} has no {attribute}() method")
    _REGISTRY[name] = engine


def _engines() -> dict[str, Any]:
    """Registered engines plus those of ``bnlab.train.engines.ENGINES`` (when it exists)."""
    found = dict(_REGISTRY)
    try:
        module = importlib.import_module("bnlab.train.engines")
    except ModuleNotFoundError as error:
        if error.name != "bnlab.train.engines":
            raise
        return found
    for name, engine in dict(getattr(module, "ENGINES", {})).items():
        found.setdefault(name, engine() if isinstance(engine, type) else engine)
    return found


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
        hint = did_you_mean(name, engines) if isinstance(name, str) else ""
        known = ", ".join(["auto", *engines])
        extra = (
            "; the stacked engine is not installed in this version of bnlab"
            if name == "stacked"
            else ""
        )
        raise ConfigError(f"engine: {name!r} is not available{hint}; engines: {known}{extra}")
    reason = _available(engines[name], device)
    if reason is not None:
        raise ConfigError(f"engine: {name!r} cannot run on device {device!r}: {reason}")
    return engines[name]


def _available(engine: Any, device: str) -> str | None:
    check = getattr(engine, "available", None)
    return check(device) if callable(check) else None
