"""The monitor's engine, shared by the Keras, PyTorch and Lightning front ends.

A :class:`Watcher` holds the bounded validation sample, the reservoir of training inputs, the
per-measurement table and the findings seen so far. The front ends tell it when a period
(an epoch, or ``N`` steps) ends and what they saw of the training steps; it measures
(:func:`bnlab.monitor.measure.measure`), judges (:func:`bnlab.monitor.judge.judge`) and
prints one line per finding the first time it appears.

Sample sizes (the cost): the validation sample is at most ``val_samples`` and at most
``sample_fraction`` of the training samples seen in the period; the training sample for the
exact statistics half of that, at most ``train_samples``. The monitor's passes then cost
about ``2.5 * sample_fraction`` forward passes per training sample (two over the validation
sample, one over the training sample), against the three (forward and backward) of the
training step itself and one more for Keras's own validation: about 5 % of an epoch by
default (``benchmarks/monitor_overhead.py`` measures it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch

from bnlab._validation import check_number, check_positive_int
from bnlab.doctor.adapters import ModelAdapter
from bnlab.doctor.findings import Finding
from bnlab.doctor.metrics import resolve_loss
from bnlab.errors import ConfigError
from bnlab.monitor.judge import Context, judge
from bnlab.monitor.measure import measure
from bnlab.monitor.sampling import Reservoir, fixed_sample

LOG = logging.getLogger("bnlab.monitor")
MIN_VAL, MIN_TRAIN = 64, 32


def _mse(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.mse_loss(outputs.reshape(y.shape).float(), y.float())


def _log_warning(line: str) -> None:
    LOG.warning("bnlab: %s", line)


class Watcher:
    """Measurements and findings of one training run (see the module docstring)."""

    def __init__(
        self,
        val_data,
        *,
        train_data=None,
        val_samples: int = 2048,
        train_samples: int = 512,
        sample_fraction: float | None = 0.08,
        loss=None,
        seed: int = 0,
        chunk: int = 512,
        verbose: bool = True,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.val_samples = check_positive_int("val_samples", val_samples)
        self.train_samples = check_positive_int("train_samples", train_samples)
        if sample_fraction is not None:
            sample_fraction = check_number(
                "sample_fraction", sample_fraction, low=0, high=1, low_inclusive=False
            )
        self.sample_fraction = sample_fraction
        self.chunk = check_positive_int("chunk", chunk)
        if warn is not None and not callable(warn):
            raise ConfigError(f"warn: {warn!r} is not callable")
        self._loss = loss
        self.loss_fn = resolve_loss(loss)
        self.classify = True
        self.seed = int(seed)
        self.verbose = bool(verbose)
        self.warn = warn or _log_warning
        self._val_data = val_data
        self._train_data = train_data
        self.val: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.train_x: torch.Tensor | None = None
        self.reservoir = Reservoir(self.train_samples, seed + 1)
        self.rows: list[dict] = []
        self.layer_rows: list[dict] = []
        self.first_seen: dict[str, Finding] = {}
        self.first_epoch: dict[str, str] = {}
        self.latest: list[Finding] = []
        self.lines: list[str] = []
        self.adapter: ModelAdapter | None = None
        self._previous: dict | None = None

    # ----------------------------------------------------------------- set-up
    def attach(self, adapter: ModelAdapter) -> None:
        """Start watching ``adapter``'s model: read the samples and the current statistics."""
        self.adapter = adapter
        if self.val is None and self._val_data is not None:
            self.set_validation(self._val_data)
        if self.train_x is None and self._train_data is not None:
            self.train_x, _ = fixed_sample(self._train_data, self.train_samples, self.seed + 2)
        self._previous = adapter.running_stats()

    def set_validation(self, data) -> None:
        """Validation data found late (Lightning's val loader)."""
        self._val_data = data
        self.val = fixed_sample(data, self.val_samples, self.seed)
        y = self.val[1]
        # Floating targets that are not one-hot rows: a regression, scored by its loss.
        self.classify = y is None or not y.is_floating_point()
        if not self.classify and self._loss is None:
            self.loss_fn = _mse

    def sizes(self) -> tuple[int, int]:
        """``(validation, training)`` sample sizes for this measurement."""
        n_val = self.val[0].shape[0]
        seen = self.reservoir.seen_samples
        if self.sample_fraction is None or not seen:
            return n_val, self.train_samples
        v = max(MIN_VAL, math.ceil(self.sample_fraction * seen))
        t = max(MIN_TRAIN, math.ceil(self.sample_fraction * seen / 2))
        return min(n_val, self.val_samples, v), min(self.train_samples, t)

    # ---------------------------------------------------------------- measure
    def observe(
        self,
        *,
        epoch: int | None,
        step: int | None = None,
        trained: bool | None = None,
        mode_calls: dict | None = None,
        previous_mode_calls: dict | None = None,
    ) -> dict[str, float]:
        """Measure now, judge, record and warn; returns the scalar logs."""
        if self.adapter is None:
            raise ConfigError("monitor: not attached to a model yet")
        if self.val is None:
            raise ConfigError(
                "validation_data: the monitor needs validation data (an (x, y) pair, a "
                "DataLoader, ...) to measure accuracy"
            )
        start = time.perf_counter()
        n_val, n_train = self.sizes()
        x_val, y_val = self.val[0][:n_val], (None if self.val[1] is None else self.val[1][:n_val])
        train_x = self.reservoir.sample(n_train)
        if train_x is None and self.train_x is not None:
            train_x = self.train_x[:n_train]
        reading = measure(
            self.adapter, x_val, y_val, train_x, self.loss_fn,
            chunk=self.chunk, previous=self._previous, classify=self.classify,
        )  # fmt: skip
        self._previous = reading.running
        label = f"epoch {epoch}" if step is None else f"step {step}"
        found = judge(
            reading,
            Context(label, trained, mode_calls=mode_calls, previous_mode_calls=previous_mode_calls),
        )
        self.latest = [f for f, _ in found]
        new = [(f, line) for f, line in found if f.id not in self.first_seen]
        stale_now = any(f.id == "stale-running-stats" for f, _ in new)
        for f, line in new:
            self.first_seen[f.id] = f
            self.first_epoch[f.id] = label
            if f.id == "momentum-too-high-for-steps" and stale_now:
                continue  # the stale line already names the momentum and the fix
            self.lines.append(line)
            if self.verbose:
                self.warn(line)
        logs = self._logs(reading)
        seconds = time.perf_counter() - start
        self.rows.append({
            "epoch": epoch, "step": step, **logs,
            "samples_val": reading.samples_val, "samples_train": reading.samples_train,
            "exact_from": reading.exact_from,
            "findings": ",".join(sorted({f.id for f in self.latest})),
            "monitor_seconds": seconds,
        })  # fmt: skip
        for layer in reading.layers:
            self.layer_rows.append({
                "epoch": epoch, "step": step, "layer": layer.path, "momentum": layer.momentum,
                "steps": layer.steps, "initial_weight": layer.initial_weight,
                "mean_error_std": layer.mean_error_std,
                "variance_ratio_median": layer.variance_ratio_median,
                "nonfinite": sum(layer.nonfinite.values()) if layer.nonfinite else 0,
                "changed": layer.changed,
            })  # fmt: skip
        return logs

    @staticmethod
    def _logs(r) -> dict[str, float]:
        nan = math.nan
        logs: dict[str, float] = {}
        if r.inference_accuracy is not None:
            logs["val_accuracy_moving_bn"] = r.inference_accuracy
            logs["val_accuracy_exact_bn"] = r.exact_accuracy
        if r.inference_loss is not None:
            logs["val_loss_moving_bn"] = r.inference_loss
            logs["val_loss_exact_bn"] = r.exact_loss
        weights = [x.initial_weight for x in r.layers if x.initial_weight is not None]
        errors = [x.mean_error_std for x in r.layers if x.mean_error_std is not None]
        logs["bn_stale_weight"] = max(weights) if weights else nan
        logs["bn_mean_error_std"] = max(errors) if errors else nan
        logs["bn_nonfinite"] = float(sum(sum(x.nonfinite.values()) for x in r.layers))
        logs["bn_unchanged_layers"] = float(
            sum(1 for x in r.layers if x.expected_to_update and x.changed is False)
        )
        return logs

    # ---------------------------------------------------------------- results
    @property
    def history(self):
        """One row per measurement (a pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    @property
    def layers(self):
        """One row per BN layer per measurement (a pandas DataFrame)."""
        import pandas as pd

        return pd.DataFrame(self.layer_rows)

    def recalibrate(self, data=None) -> int:
        """Write exact statistics into the watched model; returns the samples used.

        From ``data`` when given, else the training data given to the monitor, else the
        training inputs kept from the last period.
        """
        from bnlab.doctor.recalibrate import recalibrate_in_place
        from bnlab.doctor.sources import as_sources
        from bnlab.errors import DataError

        if data is None:
            data = self._train_data
        if data is None:
            data = self.reservoir.sample(self.train_samples)
        if data is None:
            raise DataError("train_data: no training inputs seen; pass train_data to recalibrate")
        source, _ = as_sources(data, self.chunk)
        with torch.no_grad():
            return recalibrate_in_place(self.adapter, source)


class WatcherResults:
    """What every monitor front end (Keras callback, PyTorch monitor, Lightning callback)
    shows of its :class:`Watcher` (``self.watcher``), and its end-of-training recalibration."""

    watcher: Watcher
    recalibrate_at_end: bool

    def _recalibrate_if_asked(self) -> None:
        """With ``recalibrate_at_end``: write exact statistics into the model and say so."""
        if not self.recalibrate_at_end:
            return
        used = self.watcher.recalibrate()
        line = f"recalibrated the BN statistics on {used} training samples (exact statistics)"
        self.watcher.lines.append(line)
        if self.watcher.verbose:
            self.watcher.warn(line)

    @property
    def history(self):
        """One row per measurement (pandas): the logged keys, sample sizes, the findings' ids."""
        return self.watcher.history

    @property
    def layers(self):
        """One row per BN layer per measurement: momentum, steps, mⁿ, distances, changes."""
        return self.watcher.layers

    @property
    def findings(self):
        """``{id: Finding}``: each problem as it first appeared."""
        return dict(self.watcher.first_seen)

    @property
    def lines(self) -> list[str]:
        """The warning lines printed so far."""
        return list(self.watcher.lines)
