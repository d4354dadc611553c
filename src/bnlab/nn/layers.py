"""Dense and Conv2d with Keras defaults (glorot-uniform kernel, zero bias) and Keras regularizers.

Both are plain ``torch.nn.Linear`` / ``torch.nn.Conv2d`` subclasses, so every PyTorch tool
works on them; they add ``kernel_regularizer`` and :meth:`regularization_loss`, the
protocol the trainer uses to add Keras-style penalties to the loss
(see :func:`bnlab.nn.regularization_loss`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from bnlab._validation import check_choice
from bnlab.nn import initializers, regularizers


class Dense(nn.Linear):
    """``torch.nn.Linear`` initialised like Keras ``Dense`` and carrying a kernel regularizer."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
    ):
        self._kernel_init = initializers.get(kernel_initializer, "kernel_initializer")
        self._bias_init = initializers.get(bias_initializer, "bias_initializer")
        super().__init__(in_features, out_features, bias=use_bias)
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "kernel_regularizer")

    def reset_parameters(self) -> None:
        self._kernel_init(self.weight)
        if self.bias is not None:
            self._bias_init(self.bias)

    def regularization_loss(self) -> torch.Tensor | None:
        return None if self.kernel_regularizer is None else self.kernel_regularizer(self.weight)


def uneven_same_padding(conv: nn.Conv2d) -> tuple[int, int, int, int] | None:
    """``(left, right, top, bottom)`` zero padding for a ``padding="same"`` convolution whose
    sides differ (an even kernel: one more at the bottom/right, as TensorFlow and torch pad);
    ``None`` when the padding is not "same" or its sides are equal."""
    if conv.padding != "same":
        return None
    totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
    if all(t % 2 == 0 for t in totals):
        return None
    th, tw = totals
    return (tw // 2, tw - tw // 2, th // 2, th - th // 2)


class Conv2d(nn.Conv2d):
    """``torch.nn.Conv2d`` initialised like Keras ``Conv2D``; ``padding`` is ``"valid"`` or ``"same"``.

    ``"same"`` with an even kernel pads one more row/column at the bottom/right, as
    TensorFlow and Keras do (PyTorch's ``padding="same"`` does the same).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        *,
        stride=1,
        padding: str = "valid",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
    ):
        check_choice("padding", padding, ("valid", "same"))
        self._kernel_init = initializers.get(kernel_initializer, "kernel_initializer")
        self._bias_init = initializers.get(bias_initializer, "bias_initializer")
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=use_bias
        )
        self.kernel_regularizer = regularizers.get(kernel_regularizer, "kernel_regularizer")

    def reset_parameters(self) -> None:
        self._kernel_init(self.weight)
        if self.bias is not None:
            self._bias_init(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = uneven_same_padding(self)
        if pads is None:
            return super().forward(x)
        # What torch does for "same" with an even kernel, written out: pad (one more at the
        # bottom/right) and convolve unpadded. Torch warns about its copy on every call.
        return F.conv2d(
            F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups
        )

    def regularization_loss(self) -> torch.Tensor | None:
        return None if self.kernel_regularizer is None else self.kernel_regularizer(self.weight)


def regularization_loss(model: nn.Module) -> torch.Tensor:
    """Sum of every ``module.regularization_loss()`` in ``model`` (Keras's ``model.losses``).

    Only layers define ``regularization_loss`` (never containers), so nothing is counted twice.

    Returns a zero scalar when nothing in the model is regularized.
    """
    total = None
    for module in model.modules():
        fn = getattr(module, "regularization_loss", None)
        if fn is None:
            continue
        loss = fn()
        if loss is not None:
            total = loss if total is None else total + loss
    if total is None:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else "cpu")
    return total


def apply_constraints(model: nn.Module) -> None:
    """Apply every module's ``apply_constraints()`` (called by the trainer after each step)."""
    for module in model.modules():
        fn = getattr(module, "apply_constraints", None)
        if fn is not None:
            fn()
