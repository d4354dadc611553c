"""Cost of seed 003's augmentation next to one training step of ``cifar_small``.

Times ``Augmenter(rotation=15, hflip=True, width_shift=0.1, height_shift=0.1).apply`` on a
64 x 3 x 32 x 32 batch and one training step of ``bnlab.models.build("cifar_small")`` on the
same batch (forward, cross-entropy, backward, Adam with Keras's epsilon 1e-7), interleaved so
both see the same machine load. Prints one JSON line: median milliseconds of each, their
ratio (target < 0.10) and the settings. Run from the repository root::

    python benchmarks/augment_speed.py                 # CPU, torch's default thread count
    python benchmarks/augment_speed.py --threads 1 --repeats 50
    python benchmarks/augment_speed.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SEED003 = {"rotation": 15, "hflip": True, "width_shift": 0.1, "height_shift": 0.1}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, device work included."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument(
        "--repeats", type=int, default=30, help="timed repeats of each (default 30)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    args = parser.parse_args(argv)

    from bnlab.models import build
    from bnlab.train.augment import Augmenter

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build("cifar_small").to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    x = torch.rand(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    augmenter = Augmenter(**SEED003)
    generator = torch.Generator(device=device).manual_seed(0)

    def augment():
        augmenter.apply(x, generator)

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        augment()
        train_step()
    aug_s, step_s = [], []
    for _ in range(args.repeats):
        aug_s.append(_timed(augment, device))
        step_s.append(_timed(train_step, device))
    aug_ms = 1e3 * statistics.median(aug_s)
    step_ms = 1e3 * statistics.median(step_s)
    print(
        json.dumps(
            {
                "benchmark": "augment_speed",
                "augment": SEED003,
                "batch_shape": [args.batch, 3, 32, 32],
                "model": "cifar_small",
                "device": str(device),
                "threads": torch.get_num_threads(),
                "repeats": args.repeats,
                "augment_ms": round(aug_ms, 3),
                "train_step_ms": round(step_ms, 3),
                "ratio": round(aug_ms / step_ms, 4),
                "target_ratio": 0.10,
                "torch": torch.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
