"""Everything the checks read: static facts about the model and what the passes measured.

The checks never touch the model or the data; :func:`bnlab.doctor.diagnose` fills an
:class:`Exam` and every check is a pure function ``Exam -> list[Finding]``, which keeps each
check testable on hand-made numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bnlab.doctor.model_view import BNLayer, Graph


@dataclass
class ModeResult:
    """One forward mode over the diagnosed data: mean loss and accuracy (``None`` unlabelled)."""

    accuracy: float | None
    loss: float | None
    samples: int


@dataclass
class Exam:
    framework: str
    bn: list[BNLayer]
    graph: Graph
    running: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    # {path: (mean, biased var, values per channel)} over the data, BN inputs in train mode
    population: dict[str, tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict)
    # {path: (average per-batch mean, average per-batch biased var)}: what moving averages estimate
    batchwise: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    gammas: dict[str, np.ndarray] = field(default_factory=dict)
    train_mode: ModeResult | None = None  # BN on batch statistics, dropout off
    inference: ModeResult | None = None  # BN on its moving averages
    agreement: float | None = None  # same predicted class in both modes
    recalibrated: ModeResult | None = None  # inference mode after exact statistics
    recalibrated_agreement: float | None = None
    test_before: ModeResult | None = None
    test_after: ModeResult | None = None
    # inputs: per feature for (N, F) data, pooled over every value for images
    input_mean: np.ndarray | None = None
    input_std: np.ndarray | None = None
    input_min: float | None = None
    input_max: float | None = None
    regularization_loss: float | None = None
    steps: int | None = None  # given by the user
    optimizer_steps: int | None = None
    train_batch_size: int | None = None
    # {layer path: weight decay} from the optimizer given to diagnose()
    weight_decay: dict[str, float] = field(default_factory=dict)
    drift: dict = field(default_factory=dict)  # {path: numbers} frozen-bn-drift vs reference
    ema: dict = field(default_factory=dict)  # {path: numbers} stale BN of an averaged model
    batch_dependence: dict | None = None  # logits alone vs in a batch (checks.batch)
    classes: int | None = None  # width of the logits (2 for one binary logit)
    # {first BN path: scale/shift numbers} when the data does not match training (checks.data)
    mismatch: dict | None = None

    @property
    def labelled(self) -> bool:
        return self.inference is not None and self.inference.accuracy is not None

    def bn_by_path(self) -> dict[str, BNLayer]:
        return {layer.path: layer for layer in self.bn}

    def steps_for(self, layer: BNLayer) -> tuple[int | None, str | None]:
        """Training steps seen by ``layer`` and where that number comes from."""
        if self.steps is not None:
            return self.steps, "steps argument"
        if layer.steps is not None:
            return layer.steps, "num_batches_tracked"
        if self.optimizer_steps is not None:
            return self.optimizer_steps, "optimizer iterations"
        return None, None
