"""Studies of the user's own model: which engine trains it, and the ``keras`` engine.

:func:`choose_engine` is the one place that decides how a study's runs are trained when
they include a user model (:mod:`bnlab.models.user`); studies of presets go to
:func:`bnlab.study.engines.get_engine` unchanged:

* a torch factory or a translated Keras model trains with ``fit`` (``sequential``, and the
  ``--jobs`` process pool); with ``engine="stacked"`` torch factory models stack with
  ``kernels="vmap"`` (:func:`bnlab.train.stacked.vmap_refusal` says which cannot: an active
  dropout, a torch BN with ``momentum=None``; those, and translated Keras models, fall back
  to ``sequential`` with a one-line note);
* before any training, each translated Keras variant is checked against Keras on the first
  training batch (both modes, 1e-5): a difference stops the study naming the layer;
* a Keras model with a layer outside the translated set trains with Keras itself, with a
  one-line note naming the layer; ``engine="auto"`` gives every Keras-model study the
  ``keras`` engine (:class:`KerasEngine`), which trains translated runs with ``fit`` and the
  others with Keras.

Every run the ``keras`` engine trains records its path in its params (``model_path``:
``translated``, ``keras``, or ``torch`` for a torch model), so the store says which path each
variant of a Keras model took.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from bnlab.errors import ConfigError
from bnlab.study.engines import SequentialEngine, get_engine, register_engine


def _is_user(request) -> bool:
    return str(request.preset).startswith("user:")


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def choose_engine(name: str, requests: Sequence, device: str, datasets: dict | None = None):
    """The engine for ``requests`` (see the module docstring); ``datasets`` by data_key."""
    users = [r for r in requests if _is_user(r)]
    if not users:
        return get_engine(name, requests, device)
    from bnlab.models.user import build_user_model, fallback_note
    from bnlab.train.seeding import seeded

    paths: dict[str, str] = {}
    checked: set[tuple] = set()
    for request in users:
        key = (request.variant, request.preset, repr(sorted(request.model_options.items())))
        if key in checked:
            continue
        checked.add(key)
        with seeded(request.seed):
            built = build_user_model(request.preset, request.model_options, seed=request.seed)
        paths[request.variant] = built.path
        if built.path == "keras":
            _note(f"variant {request.variant!r}: {fallback_note(built.keras)}")
        elif built.path == "translated" and datasets is not None:
            _check_first_batch(request, built, datasets[request.data_key])
    needs_keras = any(p in ("keras", "translated") for p in paths.values())
    if name == "keras" or (needs_keras and name == "auto"):
        return get_engine("keras", requests, device)
    if any(p == "keras" for p in paths.values()):
        variant = next(v for v, p in paths.items() if p == "keras")
        raise ConfigError(
            f"engine: {name!r} cannot train variant {variant!r}, a Keras model without a "
            "torch translation; use engine 'auto' or 'keras'"
        )
    if name == "stacked":
        refusal = _vmap_refusal(users, paths)
        if refusal is None:  # the stacked engine stacks them with kernels="vmap"
            return get_engine("stacked", requests, device)
        _note(f"engine 'stacked' does not stack {refusal}; user models train with 'sequential'")
        return get_engine("sequential", requests, device)
    if name == "auto":
        return get_engine("sequential", requests, device)
    return get_engine(name, requests, device)


def _vmap_refusal(users: Sequence, paths: dict[str, str]) -> str | None:
    """Why the user models of ``users`` cannot stack with ``kernels="vmap"``, or ``None``."""
    from bnlab.train.stacked import vmap_refusal

    for request in users:
        if paths[request.variant] != "torch":
            return f"variant {request.variant!r}, a translated Keras model"
    seen: set[str] = set()
    for request in users:
        if request.variant in seen:
            continue
        seen.add(request.variant)
        reason = vmap_refusal(request.build())
        if reason is not None:
            return f"variant {request.variant!r}: {reason}"
    return None


def _check_first_batch(request, built, dataset) -> None:
    from bnlab.models.keras_check import check_translation

    batch = dataset.x_train[: int(request.fit_options.get("batch_size", 32))]
    try:
        check_translation(built.keras, built.module, batch)
    except ConfigError as error:
        raise ConfigError(f"variant {request.variant!r}: {error}") from None


class KerasEngine:
    """Trains Keras models with Keras itself (Keras 3, its installed backend); any torch
    model of the group (a torch factory, a translated Keras model) with ``fit``.

    The Keras path compiles the model with the study's optimizer (Keras's own Adam/SGD/
    RMSprop with the study's ``lr`` and ``optimizer_options``), sparse categorical
    cross-entropy (on probabilities when the model ends in a softmax, else on logits) and
    accuracy, trains one epoch at a time (``keras.utils.set_random_seed(seed)`` first) and
    records what ``fit`` records: ``loss``, ``accuracy`` (training mode), ``val_loss``,
    ``val_accuracy`` and ``train_eval_loss``, ``train_eval_accuracy`` (the training set in
    inference mode). ``augment`` and ``precise_eval`` are bnlab features with no Keras
    counterpart here and are refused.
    """

    name = "keras"

    def plan(self, requests: Sequence) -> list[list]:
        return [[request] for request in requests]

    def available(self, device: str) -> str | None:
        return None

    def train(self, group: Sequence, dataset, *, device: str, on_epoch_end=None) -> Iterator:
        for request in group:
            built = None
            if _is_user(request):
                from bnlab.models.user import build_user_model
                from bnlab.train.seeding import seeded

                try:
                    with seeded(request.seed):
                        built = build_user_model(
                            request.preset, request.model_options, seed=request.seed
                        )
                except Exception as error:  # noqa: BLE001 - reported per run
                    yield request, error
                    continue
            if built is None or built.module is not None:
                path = built.path if built is not None else "torch"
                for req, result in SequentialEngine().train(
                    [request], dataset, device=device, on_epoch_end=on_epoch_end
                ):
                    if not isinstance(result, BaseException):
                        result.params["model_path"] = path
                    yield req, result
                continue
            try:
                yield request, keras_fit(built.keras, dataset, request, on_epoch_end)
            except Exception as error:  # noqa: BLE001
                yield request, error


def keras_fit(model, dataset, request, on_epoch_end=None):
    """Train Keras ``model`` on ``dataset`` (channels-first tensors, moved to channels last)
    as the run ``request`` says; return a :class:`bnlab.train.History`."""
    import time

    import keras

    from bnlab.train.history import History

    opts = dict(request.fit_options)
    for key in ("augment", "precise_eval"):
        if opts.get(key):
            raise ConfigError(
                f"train.{key}: not available when a model trains with Keras (variant "
                f"{request.variant!r})"
            )
    keras.utils.set_random_seed(int(request.seed))
    optimizer = _optimizer(keras, opts)
    probabilities = _ends_in_softmax(model)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not probabilities),
        metrics=["accuracy"],
    )
    x, y = _arrays(dataset.x_train), dataset.y_train.cpu().numpy()
    val_x = dataset.x_val if dataset.x_val is not None else dataset.x_test
    val_y = dataset.y_val if dataset.x_val is not None else dataset.y_test
    xv, yv = _arrays(val_x), val_y.cpu().numpy()
    class_weight = _class_weight(opts.get("class_weight"), y)
    history = History(
        params={
            "epochs": opts["epochs"],
            "batch_size": opts["batch_size"],
            "model_path": "keras",
            "engine": "keras",
            "backend": keras.backend.backend(),
        }  # fmt: skip
    )
    start = time.perf_counter()
    batch = int(opts.get("batch_size", 32))
    for epoch in range(1, int(opts["epochs"]) + 1):
        fitted = model.fit(x, y, batch_size=batch, epochs=1, shuffle=True, verbose=0,
                           class_weight=class_weight)  # fmt: skip
        logs = {"loss": fitted.history["loss"][-1], "accuracy": fitted.history["accuracy"][-1]}
        val = model.evaluate(xv, yv, batch_size=256, verbose=0, return_dict=True)
        train = model.evaluate(x, y, batch_size=256, verbose=0, return_dict=True)
        logs.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
        logs.update(train_eval_loss=train["loss"], train_eval_accuracy=train["accuracy"])
        history.append(epoch, logs)
        if on_epoch_end is not None:
            on_epoch_end(request, epoch, logs)
        if not np.isfinite(logs["loss"]):
            history.diverged_at_epoch = epoch
            break
    history.seconds = time.perf_counter() - start
    return history


def _arrays(x) -> np.ndarray:
    x = x.detach().cpu().numpy()
    return np.moveaxis(x, 1, -1) if x.ndim > 2 else x


def _ends_in_softmax(model) -> bool:
    last = model.layers[-1]
    act = getattr(last, "activation", None)
    return type(last).__name__ == "Softmax" or getattr(act, "__name__", "") == "softmax"


def _optimizer(keras, opts: dict[str, Any]):
    kinds = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD,
             "rmsprop": keras.optimizers.RMSprop}  # fmt: skip
    name = opts.get("optimizer", "adam")
    if name not in kinds:
        raise ConfigError(f"train.optimizer: {name!r} is not adam, sgd or rmsprop on Keras")
    kwargs = dict(opts.get("optimizer_options") or {})
    if opts.get("lr") is not None:
        kwargs["learning_rate"] = float(opts["lr"])
    return kinds[name](**kwargs)


def _class_weight(option, y: np.ndarray):
    if option is None:
        return None
    if option == "balanced":
        classes, counts = np.unique(y, return_counts=True)
        return {int(c): len(y) / (len(classes) * n) for c, n in zip(classes, counts, strict=True)}
    return {int(k): float(v) for k, v in option.items()}


register_engine("keras", KerasEngine())
