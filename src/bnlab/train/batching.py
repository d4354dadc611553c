"""The order in which an epoch visits the training samples.

Like Keras's ``fit(shuffle=True)`` on arrays, every epoch draws a fresh permutation of all
samples and cuts it into consecutive batches of ``batch_size``; the last batch holds the
remainder. One difference, on purpose: when ``batch_size > 1``, a last batch of a *single*
sample is merged into the previous batch (which then has ``batch_size + 1`` samples),
because batch statistics of one sample are undefined (Keras would feed it alone, with
variance 0).

The permutation of epoch ``e`` comes from a ``torch.Generator`` seeded with
``derive_seed(seed, "shuffle", e)``: it depends on nothing but ``(n, seed, epoch)``.
"""

from __future__ import annotations

import torch

from bnlab._validation import check_positive_int
from bnlab.train.seeding import derive_seed


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """Sizes of the batches of one epoch (``n`` samples), after the single-sample merge."""
    n = check_positive_int("n", n)
    batch_size = check_positive_int("batch_size", batch_size)
    sizes = [batch_size] * (n // batch_size)
    if n % batch_size:
        sizes.append(n % batch_size)
    if batch_size > 1 and len(sizes) > 1 and sizes[-1] == 1:
        last = sizes.pop()
        sizes[-1] += last
    return sizes


def permutation(n: int, seed: int, epoch: int, *, shuffle: bool = True) -> torch.Tensor:
    """The epoch's sample order, an int64 CPU tensor of length ``n`` (``arange`` unshuffled)."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(derive_seed(seed, "shuffle", epoch))
    return torch.randperm(n, generator=generator)


def batch_order(
    n: int,
    batch_size: int,
    seed: int,
    epoch: int,
    *,
    shuffle: bool = True,
    device: torch.device | str | None = None,
) -> list[torch.Tensor]:
    """Index tensors of the batches of ``epoch`` (1-based, like ``History``).

    The indices are views into one permutation, moved to ``device`` in a single copy.
    """
    perm = permutation(n, seed, epoch, shuffle=shuffle)
    if device is not None:
        perm = perm.to(device)
    return list(torch.split(perm, batch_sizes(n, batch_size)))
