"""The seed-002 study timed three ways in one run: bnlab stacked, bnlab sequential, Keras.

Seed 002 trains its Fashion-MNIST CNN without and with BatchNorm (first 1000 training images,
the next 1000 as test set, raw 0-255 pixels, Adam, batch 64, 100 epochs). The built-in study
``seed002`` repeats that over 10 seeds per variant. This script times, on one machine and in
one invocation:

* ``bnlab_stacked``: the study's runs trained by the stacked engine (one stack per variant);
* ``bnlab_sequential``: the same runs trained one ``bnlab.train.fit`` at a time;
* ``bnlab_jobs``: the sequential engine in the study's local process pool (``bnlab run
  --jobs N``, default ``N`` = CPU count), each worker on ``cpu_count // N`` threads; the
  pool's start-up (a fresh interpreter importing torch per worker) is left out, like the
  other engines' warm-up;
* ``keras_torch``: the seed's own Keras code (Keras 3 on its torch backend), model by model;
* ``keras_tensorflow``: the same on TensorFlow (the seeds ran ``tf.keras``, so this is the
  peer the targets name) when it is installed: ``pip install tensorflow-cpu`` into the
  interpreter that runs this script, or into another one named by ``--keras-python``
  (TensorFlow is never a dependency of bnlab); skipped otherwise, with the reason in the
  JSON.

``--load N`` measures everything twice in one invocation: first as the machine is, then
with N busy processes (pure-Python spin loops, one core each) running for the whole second
timing; they are stopped when it ends, also on an error or Ctrl-C. Every engine's entry
carries ``os.getloadavg()`` at its start and end (``loadavg``), so a number taken on a
machine that was busy anyway says so.

bnlab runs go through the study's own engines (``bnlab.study.engines``) with the study's
settings from ``seed002.toml``, and one of two amounts of work per epoch (``--work``):

* ``seed`` (default): what the seed's ``fit(validation_data=...)`` does -- train, then
  evaluate the test set once (``train_eval=False, precise_eval=False``);
* ``study``: what the built-in study records -- also the training set in inference mode
  and, for BN, both sets again with exact BN statistics (one more pass to collect them):
  2 inference passes per epoch without BN, 5 with BN, against Keras's 1.

Keras runs in a subprocess per backend (the backend is fixed at import) on the same arrays. Every engine first trains one untimed warm-up model for one epoch, so one-time
start-up costs (kernel selection, Keras's tracing) are charged to no one.

Times are wall-clock seconds per trained model (per variant, then averaged over the variants
with equal weight, as the study has equal counts); ratios are computed from numbers of this
run only, over the variants Keras was timed on. Prints one JSON line on stdout; notes go to
stderr. Run from the repository root::

    python benchmarks/study_speed.py --epochs 5                 # ~1 min on 2 idle CPU cores
    python benchmarks/study_speed.py --epochs 10 --seeds 2 --load 2 \
        --keras-python /path/to/venv-with-tensorflow/bin/python   # idle and loaded, Keras-TF
    python benchmarks/study_speed.py --epochs 5 --work study    # the study's evaluations too
    python benchmarks/study_speed.py --epochs 100 --seeds 10    # the whole study: hours on CPU
    python benchmarks/study_speed.py --device cuda --keras-runs 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from busy import busy_processes, loadavg  # noqa: E402  (a sibling module of this script)

DEFAULT_DATA = Path(
    os.environ.get("BNLAB_DATA")
    or os.environ.get("BNLAB_SHARED_DATA")
    or REPO.parent / "shared" / "data"
)
STUDY = "seed002"
VARIANTS = ("no_bn", "bn")  # the study's variants, in its order


def _note(message: str) -> None:
    print(f"[study_speed] {message}", file=sys.stderr, flush=True)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: Per-epoch evaluation work: fit options of each ``--work``.
WORK = {
    "seed": {"train_eval": False, "precise_eval": False},
    "study": {"train_eval": True, "precise_eval": True},
}


def _load_study(data_dir: Path, epochs: int, work: str):
    """The seed002 study's requests (all seeds) and its dataset, with ``epochs`` and the
    evaluation work replaced."""
    from bnlab.study.runner import _request, load_data
    from bnlab.study.spec import load_spec

    spec = load_spec(STUDY)
    variants = {v.name: v for v in spec.expand()}
    first = variants[VARIANTS[0]]
    dataset = load_data(first.data_name, first.data_options, data_dir=data_dir)
    requests = {}
    for name in VARIANTS:
        variant = variants[name]
        requests[name] = []
        for seed in spec.seeds:
            # The study's own request (model options fitted to the data, fit options from
            # the TOML), with the epochs and evaluation work this benchmark asks for.
            base = _request(spec, variant, seed, dataset)
            fit_options = {**base.fit_options, "epochs": epochs, **WORK[work]}
            requests[name].append(
                type(base)(
                    base.study,
                    base.variant,
                    base.seed,
                    base.preset,
                    base.model_options,
                    fit_options,
                    base.data_key,
                )
            )
    return spec, dataset, requests


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def time_bnlab(engine_name: str, requests: dict, dataset, device: str, seeds: int) -> dict:
    """Train ``seeds`` runs of each variant with one study engine; seconds per model."""
    from bnlab.study.engines import get_engine

    engine = get_engine(engine_name, (), device)
    per_variant, accuracy = {}, {}
    load_start = loadavg()
    for name in VARIANTS:
        group = requests[name][:seeds]
        _sync(device)
        start = time.perf_counter()
        histories = []
        for planned in engine.plan(group):
            for request, outcome in engine.train(planned, dataset, device=device):
                if isinstance(outcome, Exception):
                    raise RuntimeError(f"{engine_name} {request.key}: {outcome!r}") from outcome
                histories.append(outcome)
        _sync(device)
        seconds = time.perf_counter() - start
        per_variant[name] = seconds / len(group)
        accs = [h.history["val_accuracy"][-1] for h in histories]
        accuracy[name] = sum(accs) / len(accs)
        _note(f"{engine_name} {name}: {len(group)} models in {seconds:.2f} s")
    return {
        "loadavg": [load_start, loadavg()],
        "models": seeds * len(VARIANTS),
        "seconds": round(sum(per_variant.values()) * seeds, 3),
        "per_model_s": round(sum(per_variant.values()) / len(per_variant), 4),
        "per_variant_per_model_s": {k: round(v, 4) for k, v in per_variant.items()},
        "mean_final_test_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
    }


def time_jobs(requests: dict, dataset, device: str, seeds: int, jobs: int) -> dict:
    """The sequential engine through the local executor's pool of ``jobs`` processes."""
    from bnlab.study.executors import get_executor

    warm = _one_epoch(requests["bn"][0])
    executor = get_executor("local", jobs=jobs)
    per_variant, accuracy = {}, {}
    load_start = loadavg()
    with executor.start({warm.data_key: dataset}, engine="sequential", device=device):
        for _ in range(jobs):  # start every worker (and its imports) before the clock
            executor.submit([warm])
        for outcome in executor.results():
            if outcome.status == "failed":
                raise RuntimeError(f"jobs warm-up: {outcome.error}")
        # Every run at once, as `bnlab run --jobs` submits them (no idle worker between
        # variants); the wall time is split between the variants by their runs' own seconds.
        groups = {name: requests[name][:seeds] for name in VARIANTS}
        start = time.perf_counter()
        for group in groups.values():
            for request in group:
                executor.submit([request])
        outcomes = list(executor.results())
        wall = time.perf_counter() - start
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise RuntimeError(f"jobs: {failed[0].error}")
    busy = {name: 0.0 for name in VARIANTS}
    for outcome in outcomes:
        busy[outcome.request.variant] += outcome.seconds
    for name, group in groups.items():
        mine = [o for o in outcomes if o.request.variant == name]
        per_variant[name] = wall * busy[name] / sum(busy.values()) / len(group)
        accuracy[name] = sum(o.metrics["val_accuracy"][-1] for o in mine) / len(mine)
    _note(f"jobs={jobs}: {len(outcomes)} models in {wall:.2f} s")
    return {
        "loadavg": [load_start, loadavg()],
        "jobs": jobs,
        "models": seeds * len(VARIANTS),
        "seconds": round(sum(per_variant.values()) * seeds, 3),
        "per_model_s": round(sum(per_variant.values()) / len(per_variant), 4),
        "per_variant_per_model_s": {k: round(v, 4) for k, v in per_variant.items()},
        "mean_final_test_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
    }


def _one_epoch(request):
    """``request`` trained for one epoch only (warm-up)."""
    return type(request)(
        request.study,
        request.variant,
        request.seed,
        request.preset,
        request.model_options,
        {**request.fit_options, "epochs": 1},
        request.data_key,
    )


def warm_up_bnlab(requests: dict, dataset, device: str) -> None:
    """One untimed epoch of each engine on a BN run (kernel selection, allocator growth)."""
    from bnlab.study.engines import get_engine

    for engine_name in ("sequential", "stacked"):
        engine = get_engine(engine_name, (), device)
        warm = _one_epoch(requests["bn"][0])
        for _, outcome in engine.train([warm, warm], dataset, device=device):
            if isinstance(outcome, Exception):
                raise outcome


# ------------------------------------------------------------------------- the seed's Keras
def _seed_model(keras, batch_norm: bool, input_shape, num_classes: int):
    """The seed's ``create_model`` verbatim, with ``keras.Input`` for Keras 3's input_shape."""
    tfk, tfkl = keras, keras.layers
    model = tfk.Sequential()
    model.add(tfk.Input(shape=input_shape))
    model.add(tfkl.Convolution2D(32, kernel_size=5, activation=tfk.activations.relu))
    model.add(tfkl.MaxPooling2D(pool_size=2))
    if batch_norm:
        model.add(tfkl.BatchNormalization())
    model.add(
        tfkl.Convolution2D(32, kernel_size=4, activation=tfk.activations.relu, padding="same")
    )
    model.add(tfkl.MaxPooling2D(pool_size=2))
    if batch_norm:
        model.add(tfkl.BatchNormalization())
    model.add(tfkl.Convolution2D(32, kernel_size=3, activation=tfk.activations.relu))
    model.add(tfkl.Flatten())
    if batch_norm:
        model.add(tfkl.BatchNormalization())
    model.add(tfkl.Dropout(rate=0.2))
    model.add(tfkl.Dense(num_classes))
    model.add(tfkl.Activation("softmax"))
    return model


def keras_worker(args) -> dict:
    """Runs inside the subprocess (``KERAS_BACKEND`` set): the seed's code, model by model."""
    backend = os.environ.get("KERAS_BACKEND", "")
    if importlib.util.find_spec("keras") is None:
        return {"skipped": f"keras is not installed in {sys.executable} (pip install keras)"}
    if importlib.util.find_spec(backend) is None:
        hint = "pip install tensorflow-cpu" if backend == "tensorflow" else "pip install torch"
        return {
            "skipped": f"{backend} is not installed in {sys.executable}, so Keras cannot run "
            f"on it ({hint}, or name another interpreter with --keras-python)"
        }
    import numpy as np

    if args.threads is not None and backend == "torch":
        import torch

        torch.set_num_threads(args.threads)
    import keras

    from bnlab.study.runner import load_data
    from bnlab.study.spec import load_spec

    variant = load_spec(STUDY).expand()[0]
    data = load_data(variant.data_name, variant.data_options, data_dir=args.data_dir)
    # The seed's arrays: NHWC float32 raw pixels and one-hot labels.
    x_train = data.x_train.permute(0, 2, 3, 1).numpy().astype(np.float32)
    x_test = data.x_test.permute(0, 2, 3, 1).numpy().astype(np.float32)
    classes = int(data.num_classes)
    y_train = keras.utils.to_categorical(data.y_train.numpy(), classes)
    y_test = keras.utils.to_categorical(data.y_test.numpy(), classes)
    shape = x_train.shape[1:]

    def train(batch_norm: bool, epochs: int, seed: int, rows: int | None = None) -> float:
        keras.utils.set_random_seed(seed)
        model = _seed_model(keras, batch_norm, shape, classes)
        model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
        history = model.fit(
            x_train[:rows],
            y_train[:rows],
            validation_data=(x_test, y_test),
            batch_size=64,
            epochs=epochs,
            verbose=False,
        )
        return float(history.history["val_accuracy"][-1])

    train(True, 1, 12345, rows=128)  # warm-up, untimed
    load_start = loadavg()
    seconds: dict[str, list[float]] = {}
    accuracy: dict[str, list[float]] = {}
    for i in range(args.keras_runs):
        name = VARIANTS[i % len(VARIANTS)]
        start = time.perf_counter()
        acc = train(name == "bn", args.epochs, i // len(VARIANTS))
        seconds.setdefault(name, []).append(time.perf_counter() - start)
        accuracy.setdefault(name, []).append(acc)
    per_variant = {k: sum(v) / len(v) for k, v in seconds.items()}
    versions = {"keras": keras.__version__}
    if backend == "tensorflow":
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
        versions["gpus_visible"] = len(tf.config.list_physical_devices("GPU"))
    else:
        import torch

        versions["gpus_visible"] = torch.cuda.device_count()
    return {
        "loadavg": [load_start, loadavg()],
        "backend": keras.backend.backend(),
        "python": sys.executable,
        **versions,
        "models": args.keras_runs,
        "models_per_variant": {k: len(v) for k, v in seconds.items()},
        "per_model_s": round(sum(per_variant.values()) / len(per_variant), 4),
        "per_variant_per_model_s": {k: round(v, 4) for k, v in per_variant.items()},
        "mean_final_test_accuracy": {k: round(sum(v) / len(v), 4) for k, v in accuracy.items()},
    }


def time_keras(backend: str, args) -> dict:
    """Run :func:`keras_worker` in a subprocess with ``KERAS_BACKEND=backend``."""
    python = args.keras_python or sys.executable
    command = [
        python,
        str(Path(__file__).resolve()),
        "--keras-worker",
        "--epochs",
        str(args.epochs),
        "--keras-runs",
        str(args.keras_runs),
        "--data-dir",
        str(args.data_dir),
    ]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    # This tree's bnlab first on the path, also for another interpreter.
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-5:]
        return {"failed": f"exit {done.returncode}: " + " | ".join(tail)}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ratio(slow: dict, fast: dict) -> float | None:
    """Per-model time of ``slow`` over ``fast``, over the variants both timed."""
    a = slow.get("per_variant_per_model_s") or {}
    b = fast.get("per_variant_per_model_s") or {}
    common = [k for k in VARIANTS if k in a and k in b]
    if not common:
        return None
    return round(sum(a[k] for k in common) / sum(b[k] for k in common), 3)


def measure(engines: list[str], requests: dict, dataset, seeds: int, args) -> dict:
    """Every engine asked for, timed once, and the per-model ratios between them."""
    results: dict = {}
    for engine_name in ("stacked", "sequential"):
        if engine_name in engines:
            results[f"bnlab_{engine_name}"] = time_bnlab(
                engine_name, requests, dataset, args.device, seeds
            )
    if "jobs" in engines:
        results["bnlab_jobs"] = time_jobs(requests, dataset, args.device, seeds, args.jobs)
    if "keras" in engines:
        for backend in args.keras_backends:
            results[f"keras_{backend}"] = time_keras(backend, args)
            _note(f"keras {backend}: {json.dumps(results[f'keras_{backend}'])}")
    ratios = {}
    for keras_key in ("keras_tensorflow", "keras_torch"):
        for bnlab_key in ("bnlab_stacked", "bnlab_sequential", "bnlab_jobs"):
            if keras_key in results and bnlab_key in results:
                value = _ratio(results[keras_key], results[bnlab_key])
                if value is not None:
                    ratios[f"{keras_key}/{bnlab_key}"] = value
    if "bnlab_stacked" in results and "bnlab_sequential" in results:
        ratios["bnlab_sequential/bnlab_stacked"] = _ratio(
            results["bnlab_sequential"], results["bnlab_stacked"]
        )
    results["ratios_per_model"] = ratios
    return results


def default_engine(requests: dict, device: str) -> str:
    """The engine ``bnlab run --engine auto`` (the default) picks for these runs."""
    from bnlab.train.engines import StackedEngine

    runs = [r for name in VARIANTS for r in requests[name]]
    return "stacked" if StackedEngine().preferred(runs, device) else "sequential"


def _threads_chosen(requests: dict) -> dict:
    """What bnlab's CPU thread rule picks for one run of this study right now."""
    import torch

    from bnlab.train import threads

    request = requests["bn"][0]
    model = request.build()
    macs = threads.macs_per_step(
        model, tuple(model.bnlab_meta["input_shape"]), request.fit_options["batch_size"]
    )
    return {
        "torch_default": torch.get_num_threads(),
        "usable_cores": threads.usable_cores(),
        "runnable_elsewhere": threads.runnable_elsewhere(),
        "fit_threads": threads.choose_threads(macs, "cpu") or torch.get_num_threads(),
    }


#: (entry of the JSON, minimum Keras-TF / bnlab ratio per model)
TARGETS = (("without_load", 3.0), ("under_load", 2.0))


def targets_met(out: dict) -> dict:
    """Each target's measured ratio and whether it holds (``None`` when not measured)."""
    key = f"keras_tensorflow/bnlab_{out['default_engine']}"
    met = {}
    for where, minimum in TARGETS:
        ratios = (out if where == "without_load" else out.get("under_load") or {}).get(
            "ratios_per_model", {}
        )
        value = ratios.get(key)
        load = out.get("under_load", {}).get("load") if where == "under_load" else 0
        met[where] = {
            "ratio": key,
            "busy_processes": load,
            "value": value,
            "minimum": minimum,
            "met": None if value is None else value >= minimum,
        }
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100, help="epochs per run (default 100)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="runs per variant timed for each bnlab engine (default 3; the study has 10)",
    )
    parser.add_argument(
        "--keras-runs",
        type=int,
        default=2,
        help="Keras models timed per backend, alternating no_bn/bn (default 2)",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu", help="cpu or cuda, for bnlab (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--engines",
        default=None,
        help="comma-separated subset of stacked, sequential, jobs, keras (default: all; "
        "without jobs on a GPU, where worker processes would share one device)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes of the 'jobs' engine (default: the CPU count)",
    )
    parser.add_argument(
        "--work",
        choices=sorted(WORK),
        default="seed",
        help="evaluation per epoch: 'seed' = the test set once, as the seed's Keras code "
        "(default); 'study' = the built-in study's train_eval and precise_eval passes too",
    )
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        help="N > 0: after the first timing, time everything again with N busy processes "
        "running (default 0: once, as the machine is)",
    )
    parser.add_argument(
        "--keras-python",
        default=os.environ.get("BNLAB_KERAS_PYTHON"),
        help="interpreter that runs the Keras workers (default: this one; "
        "$BNLAB_KERAS_PYTHON), e.g. a venv with `pip install tensorflow-cpu keras`",
    )
    parser.add_argument(
        "--keras-backends",
        default="tensorflow,torch",
        help="Keras backends timed (default tensorflow,torch)",
    )
    parser.add_argument("--keras-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.keras_backends = [b.strip() for b in args.keras_backends.split(",") if b.strip()]
    if set(args.keras_backends) - {"tensorflow", "torch"}:
        parser.error(f"--keras-backends: {args.keras_backends}; allowed: tensorflow, torch")
    for name in ("epochs", "seeds", "keras_runs", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.load < 0:
        parser.error(f"--load must be >= 0, not {args.load}")

    if args.keras_worker:
        print(json.dumps(keras_worker(args)))
        return 0

    import torch

    saved_threads = (torch.get_num_threads(), os.environ.get("BNLAB_THREADS"))
    try:
        return _main(args, parser)
    finally:  # in-process callers (tests) get their thread settings back
        torch.set_num_threads(saved_threads[0])
        if saved_threads[1] is None:
            os.environ.pop("BNLAB_THREADS", None)
        else:
            os.environ["BNLAB_THREADS"] = saved_threads[1]


def _main(args, parser) -> int:
    import torch

    if args.threads is not None:
        # A fixed count for every engine (bnlab's rules then leave it alone).
        torch.set_num_threads(args.threads)
        os.environ["BNLAB_THREADS"] = str(args.threads)
    os.environ.setdefault("BNLAB_NO_PROGRESS", "1")
    default = (
        "stacked,sequential,jobs,keras" if args.device == "cpu" else "stacked,sequential,keras"
    )
    engines = [e.strip() for e in (args.engines or default).split(",") if e.strip()]
    unknown = set(engines) - {"stacked", "sequential", "jobs", "keras"}
    if unknown:
        parser.error(f"--engines: unknown {sorted(unknown)}")

    spec, dataset, requests = _load_study(args.data_dir, args.epochs, args.work)
    seeds = min(args.seeds, len(spec.seeds))
    out: dict = {
        "benchmark": "study_speed",
        "study": STUDY,
        "epochs": args.epochs,
        "seeds_per_variant": seeds,
        "batch_size": requests["bn"][0].fit_options["batch_size"],
        "work": args.work,
        "bnlab_fit_options": WORK[args.work],
        "train_test": [int(dataset.x_train.shape[0]), int(dataset.x_test.shape[0])],
        "device": args.device,
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "bnlab_threads_chosen": _threads_chosen(requests),
        "loadavg_start": loadavg(),
    }
    t0 = time.perf_counter()
    if "stacked" in engines or "sequential" in engines:
        warm_up_bnlab(requests, dataset, args.device)
    out["default_engine"] = default_engine(requests, args.device)
    out.update(measure(engines, requests, dataset, seeds, args))
    if args.load:
        _note(f"--load {args.load}: timing again with {args.load} busy processes")
        with busy_processes(args.load) as pids:
            loaded = {"load": args.load, "busy_pids": pids, "loadavg_start": loadavg()}
            loaded.update(measure(engines, requests, dataset, seeds, args))
        loaded["loadavg_end"] = loadavg()
        out["under_load"] = loaded
    out["target"] = (
        f"CPU, per model: keras_tensorflow/bnlab_{out['default_engine']} (the engine "
        "`bnlab run` picks for this study) >= 3 on an idle machine and >= 2 with --load 2 "
        "(DESIGN.md, Performance); keras_torch is shown for reference"
    )
    out["targets_met"] = targets_met(out)
    out["loadavg_end"] = loadavg()
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
