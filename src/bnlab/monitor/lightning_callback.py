"""``bnlab.lightning.BNMonitor()``: the monitor as a PyTorch Lightning callback.

::

    trainer = lightning.Trainer(callbacks=[bnlab.lightning.BNMonitor()])

At the end of each training epoch it measures the LightningModule (its ``forward`` must
return logits) on a bounded sample of the trainer's validation loader (or ``val_data``) and
logs the same keys as the Keras callback through ``pl_module.log``, so every Lightning
logger records them. Training inputs for the exact statistics come from the batches
``on_train_batch_start`` sees (``x`` of ``(x, y)``); BN train/eval calls are counted by
read-only hooks, as in :class:`bnlab.torch.BNMonitor`. Needs the ``lightning`` extra.
"""

from __future__ import annotations

import lightning.pytorch as pl

from bnlab.doctor.torch_adapter import TorchAdapter
from bnlab.errors import ConfigError
from bnlab.monitor.core import Watcher, WatcherResults
from bnlab.monitor.sampling import first_input
from bnlab.monitor.torch_monitor import TorchHooks


def _first_loader(loaders):
    if loaders is None:
        return None
    if isinstance(loaders, (list, tuple)):
        return loaders[0] if loaders else None
    if isinstance(loaders, dict):
        return next(iter(loaders.values()), None)
    return loaders


class BNMonitor(WatcherResults, pl.Callback):
    """Watch BN during ``Trainer.fit``; parameters as :class:`bnlab.torch.BNMonitor`."""

    def __init__(
        self,
        val_data=None,
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
        super().__init__()
        self.watcher = Watcher(
            val_data, train_data=train_data, val_samples=val_samples,
            train_samples=train_samples, sample_fraction=sample_fraction, loss=loss,
            seed=seed, verbose=verbose, warn=warn,
        )  # fmt: skip
        self.recalibrate_at_end = bool(recalibrate_at_end)
        self.hooks: TorchHooks | None = None
        self._last_calls: dict | None = None
        self._step0 = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.watcher.attach(TorchAdapter(pl_module))
        self.hooks = TorchHooks(pl_module, self.watcher, inputs=False)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.watcher.reservoir.new_epoch()
        self._step0 = trainer.global_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.watcher.reservoir.add(first_input(batch))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.watcher.val is None:
            loader = _first_loader(trainer.val_dataloaders)
            if loader is None:
                raise ConfigError(
                    "val_data: the trainer has no validation loader; pass "
                    "BNMonitor(val_data=(x_val, y_val)) or a val_dataloaders to fit"
                )
            self.watcher.set_validation(loader)
        _n, calls = self.hooks.take()
        self.hooks.paused = True
        try:
            logs = self.watcher.observe(
                epoch=trainer.current_epoch + 1,
                trained=trainer.global_step > self._step0,
                mode_calls=calls,
                previous_mode_calls=self._last_calls,
            )
        finally:
            self.hooks.paused = False
        self._last_calls = calls or self._last_calls
        for key, value in logs.items():
            pl_module.log(key, float(value), on_step=False, on_epoch=True)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.hooks is not None:
            self.hooks.paused = True
            self.hooks.remove()
        self._recalibrate_if_asked()
