"""``History``: what ``fit`` returns, shaped like Keras's ``History`` object.

``history.history`` maps each metric to a list with one value per finished epoch:

=============================  ===========================================================
``loss``                       total training loss = ``data_loss + reg_loss`` (nats)
``data_loss``, ``reg_loss``    its two parts; each is the mean over the epoch's batches
                               weighted by batch size (Keras's ``Mean`` tracker), computed
                               during training, so weights change within the epoch
``accuracy``                   training accuracy in training mode (batch statistics,
                               dropout on), fraction of the epoch's samples, unweighted
``val_loss``, ``val_accuracy`` inference mode, on ``x_val`` when the dataset has one, else
                               on the test set (``params["val_source"]`` says which)
``train_eval_loss``,           the training set in inference mode at epoch end (moving BN
``train_eval_accuracy``        statistics): ``accuracy - train_eval_accuracy`` is the BN
                               train/eval discrepancy
``precise_val_accuracy``,      with ``precise_eval=True``: the same evaluations after
``precise_train_eval_accuracy`` recomputing exact BN statistics on the training set
``test_loss``, ``test_accuracy`` only when a validation set exists
=============================  ===========================================================

Losses include the regularization loss everywhere, as Keras's do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class History:
    """Per-epoch metrics and the settings of one ``fit`` call.

    ``epoch`` lists the 1-based epochs recorded; ``diverged_at_epoch`` is the 1-based epoch
    whose training loss was NaN/inf (training stopped after it), else ``None``; ``seconds``
    is the wall-clock time of the epochs (training and their evaluations), without setup.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    diverged_at_epoch: int | None = None
    seconds: float = 0.0

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record one epoch's metrics (every key gets a value for every epoch)."""
        for key in set(self.history) | set(logs):
            self.history.setdefault(key, [math.nan] * len(self.epoch)).append(
                float(logs.get(key, math.nan))
            )
        self.epoch.append(epoch)

    @property
    def diverged(self) -> bool:
        return self.diverged_at_epoch is not None

    def last(self, key: str) -> float:
        """The last recorded value of ``key`` (NaN when never recorded)."""
        values = self.history.get(key)
        return values[-1] if values else math.nan

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy (NaN stays NaN: use ``allow_nan`` or a DataFrame to store it)."""
        return {
            "history": {k: list(v) for k, v in self.history.items()},
            "params": dict(self.params),
            "epoch": list(self.epoch),
            "diverged_at_epoch": self.diverged_at_epoch,
            "seconds": self.seconds,
        }

    def to_frame(self):
        """A pandas DataFrame, one row per epoch (column ``epoch`` 1-based)."""
        import pandas as pd

        frame = pd.DataFrame(self.history)
        frame.insert(0, "epoch", self.epoch)
        return frame

    def __repr__(self) -> str:
        status = f"diverged at epoch {self.diverged_at_epoch}" if self.diverged else "ok"
        keys = ", ".join(sorted(self.history))
        return f"History(epochs={len(self.epoch)}, {status}, keys=[{keys}])"
