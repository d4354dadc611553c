"""``bnlab.torch.BNMonitor``: watch BN in a plain PyTorch training loop.

::

    monitor = bnlab.torch.BNMonitor(model, (x_val, y_val))
    for epoch in range(epochs):
        with monitor:                 # or call monitor.epoch_end() after the epoch
            for x, y in loader:
                ...                   # the usual step
    monitor.history                   # one row per epoch (pandas)

What it sees of training, through hooks that only read: a forward pre-hook on the model
keeps a bounded reservoir of the training inputs (calls with gradients enabled) for the
exact statistics, and one on each BN layer counts the gradient-enabled calls it ran in train
and in eval mode (``model.eval()`` left on after an evaluation). Its own passes are hidden
from both. Nothing it does changes training: BN buffers and the random streams are restored
after every measurement (a test compares every weight, bit for bit).
"""

from __future__ import annotations

import torch
from torch import nn

from bnlab.doctor.torch_adapter import TorchAdapter
from bnlab.doctor.torch_graph import is_bn
from bnlab.errors import ConfigError
from bnlab.monitor.core import Watcher, WatcherResults
from bnlab.monitor.sampling import first_input


class TorchHooks:
    """Read-only hooks on a module: training inputs and BN train/eval calls."""

    def __init__(self, model: nn.Module, watcher: Watcher, *, inputs: bool = True) -> None:
        self.model = model
        self.watcher = watcher
        self.paused = False
        self.train_calls = 0
        self.calls: dict[str, list[int]] = {}
        # Closures, not bound methods: copy.deepcopy(model) shares a function, not the monitor.
        self._handles = [model.register_forward_pre_hook(self._model_hook())] if inputs else []
        for path, m in model.named_modules():
            if is_bn(m):
                self.calls[path] = [0, 0]
                self._handles.append(m.register_forward_pre_hook(self._bn_hook(path)))

    def _model_hook(self):
        def hook(module, args) -> None:
            if self.paused or not torch.is_grad_enabled() or not args:
                return
            self.train_calls += 1
            self.watcher.reservoir.add(first_input(args[0] if len(args) == 1 else args))

        return hook

    def _bn_hook(self, path: str):
        def hook(module, args) -> None:
            if not self.paused and torch.is_grad_enabled():
                self.calls[path][0 if module.training else 1] += 1

        return hook

    def take(self) -> tuple[int, dict[str, tuple[int, int]]]:
        """Training calls and BN mode counts since the last take (then reset)."""
        calls = {p: (c[0], c[1]) for p, c in self.calls.items() if c[0] or c[1]}
        n = self.train_calls
        self.train_calls = 0
        for c in self.calls.values():
            c[0] = c[1] = 0
        return n, calls

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class BNMonitor(WatcherResults):
    """Watch the BN layers of ``model`` while a plain PyTorch loop trains it.

    Parameters
    ----------
    model:
        The ``torch.nn.Module`` being trained (``torch.nn.BatchNorm*d`` / ``bnlab.BatchNorm``;
        forward returns logits).
    val_data:
        Validation data: an ``(x, y)`` pair of tensors/arrays, a DataLoader or torch Dataset,
        a bnlab Dataset (its test split). At most ``val_samples`` of it are read, once.
    train_data:
        Optional training data for the exact statistics; by default the monitor keeps a
        reservoir of the inputs the model was trained on during the period.
    val_samples, train_samples, sample_fraction:
        Sample bounds (see :mod:`bnlab.monitor.core`): by default at most 2,048 validation
        and 512 training samples, and at most 8 % (validation) and 4 % (training) of the
        training samples seen since the last measurement (at least 64 and 32).
    loss:
        As :func:`bnlab.diagnose` (``None``: cross-entropy chosen from the logits' shape).
    recalibrate_at_end:
        :meth:`close` writes exact statistics into the model (and says so).
    verbose:
        Print each finding's line the first time it appears (logger ``bnlab.monitor``).
    """

    def __init__(
        self,
        model: nn.Module,
        val_data,
        *,
        train_data=None,
        val_samples: int = 2048,
        train_samples: int = 512,
        sample_fraction: float | None = 0.08,
        loss=None,
        recalibrate_at_end: bool = False,
        verbose: bool = True,
        seed: int = 0,
        warn=None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model: a {type(model).__name__} is not a torch.nn.Module")
        self.model = model
        self.recalibrate_at_end = bool(recalibrate_at_end)
        self.watcher = Watcher(
            val_data, train_data=train_data, val_samples=val_samples,
            train_samples=train_samples, sample_fraction=sample_fraction, loss=loss,
            seed=seed, verbose=verbose, warn=warn,
        )  # fmt: skip
        self.adapter = TorchAdapter(model)
        self.watcher.attach(self.adapter)
        self.hooks = TorchHooks(model, self.watcher)
        self.epoch = 0
        self.steps = 0
        self._last_calls: dict | None = None
        self._closed = False

    # --------------------------------------------------------------- measure
    def _observe(self, *, epoch: int, step: int | None) -> dict[str, float]:
        n, calls = self.hooks.take()
        self.steps += n
        self.hooks.paused = True
        try:
            logs = self.watcher.observe(
                epoch=epoch, step=step, trained=n > 0, mode_calls=calls,
                previous_mode_calls=self._last_calls,
            )  # fmt: skip
        finally:
            self.hooks.paused = False
        self._last_calls = calls or self._last_calls
        self.watcher.reservoir.new_epoch()
        return logs

    def epoch_end(self, epoch: int | None = None) -> dict[str, float]:
        """Measure at the end of an epoch (numbered from 1 unless given); returns the logs."""
        self.epoch = self.epoch + 1 if epoch is None else int(epoch)
        return self._observe(epoch=self.epoch, step=None)

    def step(self) -> dict[str, float]:
        """Measure now, between epochs (call it every N steps); the row carries the step count."""
        return self._observe(epoch=self.epoch + 1, step=self.steps + self.hooks.train_calls)

    def __enter__(self) -> BNMonitor:
        self.watcher.reservoir.new_epoch()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.epoch_end()

    def close(self) -> None:
        """Remove the hooks; with ``recalibrate_at_end`` write exact statistics first."""
        if self._closed:
            return
        self.hooks.paused = True
        self._recalibrate_if_asked()
        self.hooks.remove()
        self._closed = True
