"""``fit``: train a bnlab model the way Keras's ``model.fit`` trains the seed's model.

What one epoch does (Keras 3 semantics unless noted):

1. shuffle the training set from the run seed (:mod:`bnlab.train.batching`; a last batch of
   one sample is merged into the previous batch -- Keras would feed it alone);
2. per batch, in training mode: optional augmentation, forward, ``data_loss +
   regularization_loss``, backward, optimizer step, constraints (:mod:`bnlab.train.step`);
3. at epoch end, in inference mode: the validation set (``x_val`` or else the test set, as
   the seeds pass their test set as ``validation_data``), the training set
   (``train_eval_*``: one extra forward pass over the training set, no backward -- about a
   third of an epoch's compute; ``train_eval=False`` skips it), the test set when a
   validation set exists, and, with ``precise_eval=True``, the same on a copy whose BN
   statistics were recomputed exactly on the training set (one more forward pass to collect
   them, plus the two evaluations).

Only two host synchronisations happen per epoch: one reading the accumulated training
sums (which is also the NaN/inf check) and one reading the evaluation sums.

A NaN/inf training loss (or evaluation loss) stops training after that epoch: the epoch is
recorded, ``history.diverged_at_epoch`` is set and no exception is raised.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from bnlab.errors import ConfigError
from bnlab.train.batching import batch_order, batch_sizes
from bnlab.train.class_weight import describe
from bnlab.train.devices import resolve_device
from bnlab.train.evaluation import (
    epoch_metrics,
    eval_batch_size,
    mode,
)
from bnlab.train.history import History
from bnlab.train.layout import model_layout
from bnlab.train.optimizers import OptimizerSpec, make_optimizer, optimizer_name
from bnlab.train.options import check_train_options, resolve_lr
from bnlab.train.prepare import prepare_data, resolve_augment
from bnlab.train.progress import EpochProgress, progress_enabled
from bnlab.train.seeding import derive_seed
from bnlab.train.step import train_step
from bnlab.train.threads import macs_per_step, training_threads

EpochCallback = Callable[[int, dict], Any]


def fit(
    model: nn.Module,
    dataset,
    *,
    epochs: int,
    batch_size: int = 32,
    optimizer: OptimizerSpec = "adam",
    lr: float | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    class_weight: str | dict | None = None,
    precise_eval: bool = False,
    train_eval: bool = True,
    augment=None,
    progress: bool | None = None,
    on_epoch_end: EpochCallback | None = None,
    optimizer_options: dict | None = None,
    loss_epsilon: float | None = None,
    channels_last: bool | None = None,
) -> History:
    """Train ``model`` on ``dataset`` in place and return its :class:`History`.

    Parameters
    ----------
    model:
        A module returning logits, ``(N, C)`` or ``(N, 1)`` for a binary task. Its weights
        are used as they are: build it inside :func:`bnlab.train.seeded` for reproducible
        initial weights. It is moved to ``device``; its train/eval flags are restored.
    dataset:
        A :class:`bnlab.data.Dataset` (float32 inputs, int64 class indices).
    epochs, batch_size:
        Passes over the training set and samples per step (Keras's ``fit`` defaults to 32).
    optimizer, lr, optimizer_options:
        ``"adam"`` (Keras defaults: lr 1e-3, beta_1 0.9, beta_2 0.999, epsilon 1e-7),
        ``"sgd"`` (lr 0.01, ``momentum`` in ``optimizer_options``) or ``"rmsprop"`` (lr
        1e-3, rho 0.9, epsilon 1e-7), each with Keras's exact update
        (:mod:`bnlab.train.optimizers`); or a factory ``f(params, **options)``.
    seed:
        Shuffling, dropout masks and augmentation draw from independent streams derived
        from it (:mod:`bnlab.train.seeding`). Same seed, same model, same data: same run
        on CPU, bit for bit.
    device:
        ``"cpu"``, ``"cuda"`` (or ``"cuda:N"``) or ``"auto"`` (CUDA when available). Data
        are moved to the device once.
    class_weight:
        ``None``, ``"balanced"`` (scikit-learn's formula) or ``{class_index: weight}``;
        scales each training sample's loss as Keras does. Evaluation is unweighted, and so
        is the training ``accuracy`` (Keras weights it; bnlab does not, so that ``accuracy``
        and ``train_eval_accuracy`` measure the same thing).
    precise_eval:
        Also record ``precise_val_accuracy`` and ``precise_train_eval_accuracy``:
        evaluations with exact BN statistics recomputed on the training set (on a copy).
        For a model without BN they equal the plain accuracies and cost nothing.
    train_eval:
        ``True`` (default): also evaluate the training set in inference mode each epoch
        (``train_eval_loss``, ``train_eval_accuracy``; one forward pass over the training
        set, about a third of an epoch's compute). ``False`` leaves those keys (and
        ``precise_train_eval_accuracy``) out: the per-epoch work of Keras's
        ``fit(validation_data=...)``.
    augment:
        An :class:`bnlab.train.augment.Augmenter` or its options dict, applied to each
        training batch (never at evaluation) with a generator seeded from ``seed``.
    progress:
        ``None``: a rich progress bar on an interactive stderr unless ``BNLAB_NO_PROGRESS``
        is set; ``True``/``False`` force it on/off.
    on_epoch_end:
        ``f(epoch, logs)`` after each epoch; ``epoch`` is 1-based, ``logs`` a copy of the
        epoch's metrics.
    loss_epsilon:
        ``None`` (default): cross-entropy from the logits, as the seeds' Keras/TensorFlow
        ran it. ``1e-7``: Keras's torch backend, which clips probabilities
        (:mod:`bnlab.train.losses`).
    channels_last:
        ``None`` (default): train a convolutional model on 4-D inputs in the channels-last
        memory layout on CPU, where oneDNN's convolutions are 1.2-3x faster that way, and
        NCHW elsewhere (:mod:`bnlab.train.layout`); ``True``/``False`` force it. The model is
        handed back in the layout it came in. Numbers agree with NCHW up to float rounding.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: {type(model).__name__} is not a torch.nn.Module")
    options = check_train_options(
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "lr": lr,
            "seed": seed,
            "device": device,
            "class_weight": class_weight,
            "precise_eval": precise_eval,
            "train_eval": train_eval,
            "augment": augment,
            "progress": progress,
            "on_epoch_end": on_epoch_end,
            "optimizer_options": optimizer_options,
            "loss_epsilon": loss_epsilon,
            "channels_last": channels_last,
        }
    )
    epochs, batch_size, seed = options["epochs"], options["batch_size"], options["seed"]
    lr = resolve_lr(optimizer, lr)
    show_progress = progress_enabled(progress)
    device = resolve_device(device)
    data = prepare_data(
        [model],
        dataset,
        batch_size=batch_size,
        device=device,
        class_weight=class_weight,
        channels_last=channels_last,
    )
    x_train, y_train, weights = data.x_train, data.y_train, data.weights
    n_train, nhwc, num_outputs = data.num_train, data.channels_last, data.num_outputs

    opt = make_optimizer(optimizer, model.parameters(), lr, **(optimizer_options or {}))
    augmenter = resolve_augment(augment)
    eval_bs = eval_batch_size(batch_size, x_train[0].numel(), device)
    splits = data.splits()
    history = History(
        params={
            "epochs": epochs,
            "batch_size": batch_size,
            "steps": len(batch_sizes(n_train, batch_size)),
            "optimizer": optimizer_name(optimizer),
            "lr": lr,
            "optimizer_options": dict(optimizer_options or {}),
            "seed": seed,
            "device": str(device),
            "class_weight": describe(weights),
            "precise_eval": precise_eval,
            "train_eval": train_eval,
            "augment": None if augmenter is None else augmenter.to_options(),
            "val_source": data.val_source,
            "task": "binary" if num_outputs == 1 else "multiclass",
            "num_train": n_train,
            "num_val": int(data.x_val.shape[0]),
            "eval_batch_size": eval_bs,
            "loss_epsilon": loss_epsilon,
            "channels_last": nhwc,
        }
    )
    evaluated = ("val", "train_eval") if train_eval else ("val",)
    eval_keys = [f"{s}_{m}" for s in evaluated for m in ("loss", "accuracy")]
    if data.x_test is not None:
        eval_keys += ["test_loss", "test_accuracy"]
    if precise_eval:
        eval_keys += [f"precise_{s}_accuracy" for s in evaluated]
    aug_gen = None
    if augmenter is not None:
        aug_gen = torch.Generator(device=device).manual_seed(derive_seed(seed, "augment"))

    # The step's cost decides the CPU thread count; it is not needed on a GPU.
    step_macs = (
        macs_per_step(model, tuple(x_train.shape[1:]), batch_size) if device.type == "cpu" else None
    )
    start = time.perf_counter()
    with (
        training_threads(step_macs, device),
        model_layout(model, nhwc),
        _dropout_rng(device, derive_seed(seed, "dropout")),
        mode(model, True),
        EpochProgress(show_progress, epochs) as bar,
    ):
        for epoch in range(1, epochs + 1):
            model.train()
            sums = torch.zeros(3, dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.int64, device=device)
            for idx in batch_order(n_train, batch_size, seed, epoch, device=device):
                xb, yb = x_train[idx], y_train[idx]
                if augmenter is not None:
                    xb = augmenter.apply(xb, aug_gen)
                sw = None if weights is None else weights[yb]
                loss, data, reg, ok = train_step(model, opt, xb, yb, sw, loss_epsilon=loss_epsilon)
                # Keras's Mean tracker: batch values weighted by batch size.
                sums.add_(torch.stack((loss, data, reg)).double(), alpha=idx.numel())
                correct += ok
            loss, data, reg, hits = (torch.cat((sums, correct.double().view(1))) / n_train).tolist()
            logs = {"loss": loss, "data_loss": data, "reg_loss": reg, "accuracy": hits}
            if not math.isfinite(loss):
                # A diverged model is not evaluated; its epoch still gets every key.
                logs.update(dict.fromkeys(eval_keys, math.nan))
            else:
                logs.update(
                    epoch_metrics(
                        model,
                        splits,
                        eval_bs,
                        precise=precise_eval,
                        train_eval=train_eval,
                        loss_epsilon=loss_epsilon,
                    )
                )
            if not all(math.isfinite(logs.get(k, math.nan)) for k in ("loss", "val_loss")):
                history.diverged_at_epoch = epoch
            history.append(epoch, logs)
            bar.update(epoch, logs)
            if on_epoch_end is not None:
                on_epoch_end(epoch, dict(logs))
            if history.diverged:
                break
    history.seconds = time.perf_counter() - start
    return history


@contextlib.contextmanager
def _dropout_rng(device: torch.device, seed: int) -> Iterator[None]:
    """Seed torch's global RNG (dropout draws from it) for the run; restore it afterwards.

    Only the CPU generator and the training device's generator are touched.
    """
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            with torch.cuda.device(cuda[0]):
                torch.cuda.manual_seed(seed)
        yield
