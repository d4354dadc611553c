"""What the BN monitor adds to an epoch, with its default settings, on the seed-002 model.

Seed 002's setting: ``fashion_cnn`` with BN (33,930 parameters), Adam, batch 64, Fashion-MNIST
train = first 1,000, validation = next 1,000 (real data from ``../shared/data``; scikit-learn's
digits, upsampled to 28x28, when it is absent), trained two ways:

* ``keras``: the seed's own Keras code (Keras 3, torch backend), ``model.fit(...,
  validation_data=...)`` with and without ``bnlab.keras.BNMonitor(validation_data=...)``;
* ``bnlab``: ``bnlab.models.build("fashion_cnn")`` trained by ``bnlab.train.fit`` (validation
  every epoch, ``train_eval=False`` as Keras's fit does), with and without
  ``bnlab.torch.BNMonitor`` called from ``on_epoch_end``.

Keras: epochs with and without the monitor alternate on the same model (one
``fit(epochs=1)`` call each); bnlab: whole runs with and without alternate (twice each). A
change in the machine's load then hits both; the ratio is of the median epoch times.
The machine may be shared: the load average is printed with every timing. Prints one JSON
line per trainer::

    python benchmarks/monitor_overhead.py                 # both trainers, 6 epochs each
    python benchmarks/monitor_overhead.py --trainer keras --epochs 10
    BNLAB_BENCH_VERBOSE=1 python benchmarks/monitor_overhead.py --trainer keras   # each epoch
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BNLAB_SHARED_DATA", REPO.parent / "shared" / "data"))


def seed002_arrays(n: int = 1000):
    """``(x_train, y_train, x_val, y_val, source)``: NHWC float32 in [0, 1], int labels."""
    path = DATA / "fashion_mnist.npz"
    if path.is_file():
        d = np.load(path)
        x = d["x_train"][: 2 * n].astype("float32")[..., None] / 255.0
        y = d["y_train"][: 2 * n].astype("int64")
        source = "fashion_mnist (first 1000 / next 1000)"
    else:  # digits 8x8 -> 28x28 by nearest-neighbour upsampling: the same model still fits
        from sklearn.datasets import load_digits

        dg = load_digits()
        img = np.kron(dg.images / 16.0, np.ones((3, 3)))  # 24x24
        img = np.pad(img, ((0, 0), (2, 2), (2, 2)))
        x, y = img[: 2 * n, :, :, None].astype("float32"), dg.target[: 2 * n].astype("int64")
        source = "digits upsampled to 28x28 (fashion_mnist.npz absent)"
    return x[:n], y[:n], x[n:], y[n:], source


def _summary(trainer, plain, watched, extra):
    base, with_monitor = statistics.median(plain), statistics.median(watched)
    return {
        "benchmark": "monitor_overhead",
        "trainer": trainer,
        "runs_each": len(plain),
        "epoch_seconds_without": round(base, 3),
        "epoch_seconds_with": round(with_monitor, 3),
        "overhead_ratio": round(with_monitor / base - 1.0, 4),
        "target_ratio": 0.10,
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        **extra,
    }


def bench_keras(data, epochs: int) -> dict:
    import importlib.util

    import keras

    import bnlab.keras

    # Seed 002's create_model, as the example writes it in Keras 3.
    spec = importlib.util.spec_from_file_location("monitor_seed002", REPO / "examples" / "monitor_seed002.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y, xv, yv, source = data
    yc, yvc = keras.utils.to_categorical(y, 10), keras.utils.to_categorical(yv, 10)
    keras.utils.set_random_seed(0)
    model = module.create_model(x.shape[1:])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    monitor = bnlab.keras.BNMonitor(validation_data=(xv, yvc), warn=lambda line: None)
    plain, watched = [], []
    model.fit(x, yc, validation_data=(xv, yvc), batch_size=64, epochs=1, verbose=0)  # warm-up
    for i in range(2 * epochs):
        clock = Clock()
        cbs = [monitor, clock] if i % 2 else [clock]  # the clock last: it times the monitor too
        model.fit(x, yc, validation_data=(xv, yvc), batch_size=64, epochs=1, verbose=0,
                  callbacks=cbs)  # fmt: skip
        (watched if i % 2 else plain).append(clock.seconds)
        if os.environ.get("BNLAB_BENCH_VERBOSE"):
            print("monitored" if i % 2 else "plain", round(clock.seconds, 3), flush=True)
    hist = monitor.history
    return _summary("keras (seed 002's code, Keras 3 on torch)", plain, watched, {
        "data": source,
        "monitor_samples_val": int(hist["samples_val"].iloc[-1]),
        "monitor_samples_train": int(hist["samples_train"].iloc[-1]),
        "monitor_seconds_median": round(float(hist["monitor_seconds"].median()), 3),
    })  # fmt: skip


def bench_bnlab(data, epochs: int) -> dict:
    import bnlab.torch
    from bnlab.data.dataset import Dataset
    from bnlab.models import build
    from bnlab.train import fit, seeded

    x, y, xv, yv, source = data
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
    ds = Dataset(to_nchw(x), torch.from_numpy(y), to_nchw(xv), torch.from_numpy(yv),
                 classes=[str(i) for i in range(10)])  # fmt: skip
    plain, watched, monitor = [], [], None
    # Whole runs (fit's per-call set-up would otherwise count as training inputs), alternating.
    for i in range(4):
        with seeded(0):
            model = build("fashion_cnn")
        hook = None
        if i % 2:
            monitor = bnlab.torch.BNMonitor(model, (ds.x_test, ds.y_test), warn=lambda line: None)
            hook = lambda e, logs, m=monitor: m.epoch_end()  # noqa: E731
        h = fit(model, ds, epochs=epochs, batch_size=64, train_eval=False, progress=False,
                on_epoch_end=hook)  # fmt: skip
        (watched if i % 2 else plain).append(h.seconds / epochs)
    monitor.close()
    hist = monitor.history
    return _summary("bnlab.train.fit", plain, watched, {
        "data": source,
        "monitor_samples_val": int(hist["samples_val"].iloc[-1]),
        "monitor_samples_train": int(hist["samples_train"].iloc[-1]),
        "monitor_seconds_median": round(float(hist["monitor_seconds"].median()), 3),
    })  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainer", choices=("keras", "bnlab", "both"), default="both")
    parser.add_argument("--epochs", type=int, default=6, help="timed epochs with and without")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = seed002_arrays()
    if args.trainer in ("bnlab", "both"):
        print(json.dumps(bench_bnlab(data, args.epochs)), flush=True)
    if args.trainer in ("keras", "both"):
        print(json.dumps(bench_keras(data, args.epochs)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
