"""Where a run's seed applies, and how one seed feeds several independent random streams.

A bnlab run is reproduced by one integer ``seed``:

* **initial weights** -- build the model inside :func:`seeded`::

      with bnlab.train.seeded(seed):
          model = bnlab.models.build("fashion_cnn")
      history = bnlab.train.fit(model, data, epochs=10, seed=seed)

  (``fit`` receives a model that already has its weights, so it cannot seed them);
* **shuffling**, **dropout masks** and **augmentation** -- inside :func:`bnlab.train.fit`,
  each from its own stream derived from ``seed``, so adding augmentation does not change
  the batch order and two runs with the same seed are identical on CPU.

:func:`seeded` and ``fit`` restore the global torch RNG state afterwards: seeding a run
never perturbs the caller's random numbers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from bnlab.train.options import check_option

#: Stream names mixed into the seed; changing them changes every run's randomness.
STREAMS = {"shuffle": 1, "dropout": 2, "augment": 3}


def check_seed(seed) -> int:
    """A seed is an integer in [0, 2**63)."""
    return check_option("seed", seed)


def derive_seed(seed: int, stream: str, *keys: int) -> int:
    """An independent 63-bit seed for ``stream`` (and e.g. the epoch) from the run seed.

    Uses NumPy's ``SeedSequence`` hashing, so nearby seeds give unrelated streams.
    """
    entropy = [check_seed(seed), STREAMS[stream], *(int(k) for k in keys)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@contextlib.contextmanager
def seeded(seed: int, devices: list | None = None) -> Iterator[None]:
    """Seed torch's global RNG for the block, restoring the previous state on exit.

    ``devices`` are the CUDA devices whose RNG is forked too (default: none, since models
    are built on the CPU).
    """
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=devices or [], device_type="cuda"):
        torch.manual_seed(seed)
        yield
