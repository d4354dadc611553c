"""Converting BN momentum between the Keras and the PyTorch conventions.

Keras: ``running = momentum * running + (1 - momentum) * batch`` (momentum is the
fraction *kept*, default 0.99). PyTorch: ``running = (1 - momentum) * running +
momentum * batch`` (momentum is the fraction *taken from the batch*, default 0.1).
So torch's 0.1 is Keras's 0.9, and Keras's 0.99 is torch's 0.01.
"""

from __future__ import annotations

from bnlab._validation import check_number


def keras_to_torch_momentum(momentum: float) -> float:
    """Keras momentum (fraction kept) -> PyTorch momentum (fraction of the new batch)."""
    check_number("momentum", momentum, low=0.0, high=1.0)
    return float(round(1.0 - momentum, 12))


def torch_to_keras_momentum(momentum: float) -> float:
    """PyTorch momentum (fraction of the new batch) -> Keras momentum (fraction kept)."""
    check_number("momentum", momentum, low=0.0, high=1.0)
    return float(round(1.0 - momentum, 12))
