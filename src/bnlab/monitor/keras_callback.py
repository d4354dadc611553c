"""``bnlab.keras.BNMonitor``: a Keras 3 callback that watches BN while ``fit`` trains.

::

    model.fit(x, y, epochs=20, callbacks=[bnlab.keras.BNMonitor(validation_data=(x_val, y_val))])

Each epoch's measurements go into Keras's ``logs`` (so ``History``, ``CSVLogger``,
``TensorBoard`` and the progress bar show them; put the monitor before other logging
callbacks in the list), into :attr:`BNMonitor.history`, and the first time a problem appears
one line names it and its fix. The exact statistics come from a reservoir of the inputs the
training steps received (the model's ``train_step`` is wrapped to read them, and unwrapped at
the end of ``fit``), or from ``train_data``.

Keras is imported when this module is; it runs on the torch backend (the doctor's adapter).
"""

from __future__ import annotations

from bnlab.doctor.keras_adapter import KerasAdapter, import_keras
from bnlab.errors import ConfigError
from bnlab.monitor.core import Watcher, WatcherResults
from bnlab.monitor.sampling import first_input

keras = import_keras()


class BNMonitor(WatcherResults, keras.callbacks.Callback):
    """Watch BN during ``model.fit`` (see :class:`bnlab.torch.BNMonitor` for the parameters).

    ``validation_data`` is required: the monitor scores its own bounded sample of it in
    inference mode and with exact statistics (``val_accuracy_moving_bn``,
    ``val_accuracy_exact_bn``, ``val_loss_moving_bn``, ``val_loss_exact_bn``; losses only
    (mean squared error unless ``loss`` is given) when the targets are not class labels).
    One-hot labels are read as class indices. With ``recalibrate_at_end=True`` the model leaves ``fit`` with exact
    statistics, and the monitor says so.
    """

    def __init__(
        self,
        validation_data=None,
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
        if validation_data is None:
            raise ConfigError("validation_data: None; pass the (x_val, y_val) the model is scored on")
        self.watcher = Watcher(
            validation_data, train_data=train_data, val_samples=val_samples,
            train_samples=train_samples, sample_fraction=sample_fraction, loss=loss,
            seed=seed, verbose=verbose, warn=warn,
        )  # fmt: skip
        self.recalibrate_at_end = bool(recalibrate_at_end)
        self._iterations = None
        self._wrapped = False

    # ------------------------------------------------------------- callbacks
    def _optimizer_steps(self) -> int | None:
        opt = getattr(self.model, "optimizer", None)
        it = getattr(opt, "iterations", None)
        return None if it is None else int(it.numpy())

    def on_train_begin(self, logs=None):
        self.watcher.attach(KerasAdapter(self.model))
        self._iterations = self._optimizer_steps()
        self._wrap_train_step()

    def _wrap_train_step(self):
        model = self.model
        original = model.train_step
        reservoir = self.watcher.reservoir

        def train_step(data):
            reservoir.add(first_input(data))
            return original(data)

        model.train_step = train_step
        self._wrapped = True

    def _unwrap(self):
        if self._wrapped and "train_step" in self.model.__dict__:
            del self.model.__dict__["train_step"]
        self._wrapped = False

    def on_epoch_begin(self, epoch, logs=None):
        self.watcher.reservoir.new_epoch()

    def on_epoch_end(self, epoch, logs=None):
        steps = self._optimizer_steps()
        trained = None if steps is None or self._iterations is None else steps > self._iterations
        self._iterations = steps
        measured = self.watcher.observe(epoch=epoch + 1, trained=trained)
        if logs is not None:
            logs.update(measured)

    def on_train_end(self, logs=None):
        self._unwrap()
        self._recalibrate_if_asked()
