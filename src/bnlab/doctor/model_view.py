"""The doctor's view of a model: pure types shared by the checks and the adapters.

Every check is written once against :class:`ModelAdapter`; :mod:`bnlab.doctor.torch_adapter`
implements it for PyTorch modules (``torch.nn.BatchNorm*d`` and :class:`bnlab.BatchNorm`) and
:mod:`bnlab.doctor.keras_adapter` for Keras 3 models on the torch backend (Keras is imported
only when a Keras model is given).

Conventions the adapters guarantee:

* ``BNLayer.momentum`` is in **Keras's convention** (fraction of the moving statistics kept
  per step: PyTorch's ``momentum=0.1`` reads 0.9 here); ``None`` for PyTorch's cumulative
  average (``momentum=None``).
* Running statistics are exchanged as float64 numpy ``(mean, var)``; ``var`` is what the layer
  stores (``BNLayer.variance`` tells whether that is the biased or the unbiased estimate).
* :meth:`ModelAdapter.forward` returns float32 **logits** (Keras models ending in softmax or
  sigmoid have their probabilities turned back into logits), runs with dropout disabled, and
  leaves every running statistic and train/eval flag as it found them.
* The graph has one node per layer call, with its inputs, so structural checks can ask
  "what feeds this BN" and "what does this BN feed".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

# Node kinds shared by both frameworks.
KINDS = (
    "input", "bn", "linear", "conv", "dropout", "activation", "pool", "flatten", "identity",
    "pad", "rescale", "other",
)  # fmt: skip


@dataclass
class BNLayer:
    """What the doctor knows about one BN layer, read without running the model."""

    path: str
    kind: str  # e.g. "torch.nn.BatchNorm2d", "bnlab.BatchNorm", "keras.BatchNormalization"
    num_features: int
    momentum: float | None  # Keras convention: fraction kept per step; None = cumulative
    native_momentum: float | None  # as the framework spells it
    epsilon: float
    steps: int | None  # training steps this layer has seen, when the framework counts them
    variance: str  # "biased" or "unbiased": how the stored running variance is estimated
    has_params: bool  # gamma and/or beta exist
    params_frozen: bool  # gamma/beta exist and none of them is trainable
    uses_batch_stats_in_training: bool  # a training step normalises with batch statistics
    in_train_mode: bool | None  # PyTorch's module.training; None for Keras (set per call)
    tracks_running_stats: bool = True
    virtual_batch_size: int | None = None

    @property
    def label(self) -> str:
        """The path, with the layer type when the path alone does not say it."""
        short = self.kind.rsplit(".", 1)[-1]
        if short.lower() in self.path.lower().replace("_", ""):
            return self.path
        return f"{self.path} ({short})"


@dataclass
class Node:
    """One layer call in the model's graph."""

    name: str  # unique within the graph
    path: str  # module path (PyTorch) or layer name (Keras) shown to users
    kind: str  # one of KINDS
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The path, with the layer type when the path alone does not say it ("3 (BatchNorm1d)")."""
        kind = self.attrs.get("type")
        if not kind or kind.lower() in self.path.lower().replace("_", ""):
            return self.path
        return f"{self.path} ({kind})"


@dataclass
class Graph:
    """Layer calls in execution order; ``source`` says how the order was obtained."""

    nodes: dict[str, Node]
    outputs: list[str]
    source: str  # "torch.fx", "registration order" or "keras graph"

    def successors(self, name: str) -> list[Node]:
        return [n for n in self.nodes.values() if name in n.inputs]

    def producers(self, node: Node, through: Callable[[Node], bool]) -> Iterator[Node]:
        """Nodes feeding ``node``, looking back through nodes for which ``through`` holds."""
        seen: set[str] = set()
        stack = list(node.inputs)
        while stack:
            name = stack.pop()
            if name in seen or name not in self.nodes:
                continue
            seen.add(name)
            prev = self.nodes[name]
            if through(prev):
                stack.extend(prev.inputs)
            else:
                yield prev

    def reaches_output(self, node: Node, through: Callable[[Node], bool]) -> bool:
        """Whether ``node``'s output is a model output, possibly through ``through`` nodes."""
        stack, seen = [node], set()
        while stack:
            cur = stack.pop()
            if cur.name in seen:
                continue
            seen.add(cur.name)
            if cur.name in self.outputs:
                return True
            nxt = self.successors(cur.name)
            if not nxt:
                continue
            stack.extend(n for n in nxt if through(n))
        return False


class ModelAdapter(ABC):
    """The doctor's view of one model; see the module docstring for the conventions."""

    framework: str
    model: Any
    wrappers: (
        tuple[str, ...] | list[str]
    ) = ()  # DataParallel / torch.compile wrappers removed (outermost first)

    @abstractmethod
    def bn_layers(self) -> list[BNLayer]:
        """Every BN layer, in model order."""

    @abstractmethod
    def graph(self) -> Graph:
        """The layer graph for structural checks."""

    @abstractmethod
    def copy(self) -> ModelAdapter:
        """An adapter over an independent deep copy of the model."""

    @abstractmethod
    def prepare(self, x: torch.Tensor, layout: str) -> Any:
        """Inputs as the model takes them (``layout`` is the data's: ``"NCHW"`` or ``"as-given"``).

        Raises :class:`bnlab.errors.DataError` when the shape cannot fit the model.
        """

    @abstractmethod
    def forward(self, x: Any, *, train: bool, capture: dict | None = None) -> torch.Tensor:
        """Logits for prepared inputs ``x``.

        ``train=True`` runs BN layers in training mode (batch statistics), everything else in
        inference mode (dropout off). When ``capture`` is a dict, each BN layer's input is
        added to ``capture[path]`` (a :class:`~bnlab.doctor.moments.PooledMoments`).
        Running statistics and train/eval flags are unchanged afterwards.
        """

    @abstractmethod
    def running_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{path: (moving mean, moving variance)}`` for BN layers that keep them."""

    @abstractmethod
    def set_running_stats(self, stats: dict[str, tuple[np.ndarray, np.ndarray, int]]) -> None:
        """Write population statistics ``{path: (mean, biased var, count)}`` into the layers.

        A layer whose convention is unbiased receives ``var * count / (count - 1)``.
        """

    @abstractmethod
    def gammas(self) -> dict[str, np.ndarray]:
        """``{path: gamma}`` for BN layers that learn a scale."""

    @abstractmethod
    def regularization_loss(self) -> float | None:
        """The model's current weight-regularization penalty (``None`` when it has none)."""

    @abstractmethod
    def optimizer_steps(self) -> int | None:
        """Training steps recorded by the model's optimizer, when the model carries one."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Every weight and buffer as numpy arrays (for before/after comparisons)."""

    @abstractmethod
    def save(self, path: str) -> None:
        """Write the model in its framework's safe format."""
