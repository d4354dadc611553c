"""The stacked engine's GPU path checked and timed in one run (at most ~8 minutes on CUDA).

Four steps, each recorded in one JSON object (a step that fails records its error and the
others still run):

1. ``parity``: the stacked engine against one ``bnlab.train.fit`` per run on the device, for
   ``fashion_cnn`` without and with BN (2 seeds, a few epochs, dropout off: ``fit`` and a
   stack draw dropout masks from different generators on CUDA, so with dropout they are
   different runs by design). Both the device's default kernels (``"stacked"`` on CUDA: one
   grouped convolution for the stack) and ``"per_run"`` (``fit``'s own kernels). TF32 is
   switched off for this step (PyTorch lets cuDNN convolutions use TF32 by default, for
   ``fit`` as well), so the tolerance measured is the engine's, not TF32's. Printed: the
   largest difference of every per-epoch metric and of the final weights (relative to the
   largest weight), and whether CUDA graphs were captured (a failed capture falls back to
   eager with a ``RuntimeWarning``, recorded here).
2. ``study``: the built-in study ``seed002`` (2 variants x 10 seeds x 100 epochs, its own
   settings: batch 64, Adam, train-set and exact-statistics evaluations every epoch) trained
   by the stacked engine, timed after an untimed one-epoch warm-up of each stack (graph
   capture, cuDNN autotuning). Target: <= 2 s on one H100/H200.
3. ``keras``: the seed's own Keras code (``benchmarks/study_speed.py``'s worker: ``create_model``,
   ``compile``, ``fit(validation_data=...)``) on the same device for one model and a reduced
   number of epochs, **extrapolated** to 100 epochs (labelled so in the JSON), and its ratio
   to the stacked engine's time per model of the same variant. Target: >= 300x. Keras runs on
   TensorFlow when the interpreter (``--keras-python``) has it, else on torch; TensorFlow
   needs its CUDA build (``pip install tensorflow[and-cuda]``, not ``tensorflow-cpu``) to
   see the GPU, and ``keras_on_gpu`` in the JSON says whether it did.
4. ``k_throughput``: training steps of a stack of K = 1, 2, 4, ..., 256 runs against ``fit``'s
   step on one model (``benchmarks/stacked_scaling.py``'s timers; training steps only).

Prints one JSON line and writes it to ``benchmarks/results/gpu-<device>.json`` (``--out``)::

    python benchmarks/gpu_check.py                      # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run            # every step at tiny size on CPU, < 60 s

``--dry-run`` runs every step on the CPU at a tiny size (256 training images, 1 epoch, K = 1
and 2) so that the script is known to work before a GPU is available; its numbers mean
nothing. Without the Fashion-MNIST files a dry run uses random images of the same shape.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from busy import loadavg  # noqa: E402  (sibling modules of this script)

DEFAULT_DATA = Path(
    os.environ.get("BNLAB_DATA")
    or os.environ.get("BNLAB_SHARED_DATA")
    or REPO.parent / "shared" / "data"
)
STUDY = "seed002"
VARIANTS = ("no_bn", "bn")

#: Sizes of each step: the real check and the dry run.
SIZES = {
    "full": {
        "rows": None,
        "parity_epochs": 3,
        "study_epochs": None,  # the study's own (100)
        "study_seeds": None,  # the study's own (10)
        "keras_epochs": 5,
        "ks": (1, 2, 4, 8, 16, 32, 64, 128, 256),
        "k_steps": 20,
        "k_warmup": 3,
    },
    "dry": {
        "rows": 256,
        "parity_epochs": 1,
        "study_epochs": 1,
        "study_seeds": 2,
        "keras_epochs": 1,
        "ks": (1, 2),
        "k_steps": 1,
        "k_warmup": 1,
    },
}
STUDY_TARGET_S = 2.0
KERAS_TARGET_RATIO = 300.0


def _note(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ the data
def load_study(data_dir: Path, rows: int | None, dry: bool):
    """The seed002 study's spec and dataset (the first ``rows`` of each split when given).

    Without the data files a dry run gets random raw-pixel images of the same shape."""
    import torch

    from bnlab.data.dataset import Dataset
    from bnlab.errors import DataError
    from bnlab.study.runner import load_data
    from bnlab.study.spec import load_spec

    spec = load_spec(STUDY)
    variant = spec.expand()[0]
    try:
        data = load_data(variant.data_name, variant.data_options, data_dir=data_dir)
        source = "fashion_mnist"
    except DataError:
        if not dry:
            raise
        g = torch.Generator().manual_seed(0)
        n = rows or 256
        data = Dataset(
            x_train=torch.randint(0, 256, (n, 1, 28, 28), generator=g).float(),
            y_train=torch.randint(0, 10, (n,), generator=g),
            x_test=torch.randint(0, 256, (n, 1, 28, 28), generator=g).float(),
            y_test=torch.randint(0, 10, (n,), generator=g),
            classes=[str(i) for i in range(10)],
            name="random",
        )
        source = "random images (no Fashion-MNIST files found)"
    if rows is not None:
        data = Dataset(
            x_train=data.x_train[:rows],
            y_train=data.y_train[:rows],
            x_test=data.x_test[:rows],
            y_test=data.y_test[:rows],
            classes=data.classes,
            name=data.name,
        )
    return spec, data, source


def study_requests(spec, dataset, epochs: int | None, seeds: int | None) -> list:
    """The study's run requests, both variants, with its own fit options (``epochs``/
    ``seeds`` reduced when given)."""
    from bnlab.study.runner import _request

    out = []
    variants = {v.name: v for v in spec.expand()}
    for name in VARIANTS:
        for seed in list(spec.seeds)[: seeds or len(spec.seeds)]:
            base = _request(spec, variants[name], seed, dataset)
            if epochs is not None:
                base = type(base)(
                    base.study,
                    base.variant,
                    base.seed,
                    base.preset,
                    base.model_options,
                    {**base.fit_options, "epochs": epochs},
                    base.data_key,
                )
            out.append(base)
    return out


@contextlib.contextmanager
def graph_warnings() -> Iterator[list[str]]:
    """Collect the stacked engine's ``cuda_graphs`` fallback warnings of the block."""
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as records:
        warnings.simplefilter("always")
        yield caught
    caught.extend(str(r.message) for r in records if "cuda_graphs" in str(r.message))


@contextlib.contextmanager
def no_tf32():
    """TF32 off for cuDNN convolutions and matmuls (restored afterwards)."""
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ------------------------------------------------------------------------------ 1 parity
def _max_diff(a: list[float], b: list[float]) -> float:
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def step_parity(dataset, device: str, size: dict) -> dict:
    import torch

    from bnlab.models import build
    from bnlab.train import fit, seeded
    from bnlab.train.stacked import fit_stacked

    seeds = [0, 1]
    options = {
        "epochs": size["parity_epochs"],
        "batch_size": 64,
        "optimizer": "adam",
        "train_eval": False,
        "precise_eval": False,
        "progress": False,
    }
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")

    def models(norm):
        out = []
        for seed in seeds:
            with seeded(seed):
                out.append(build("fashion_cnn", norm=norm, dropout=0.0))
        return out

    result: dict = {"seeds": seeds, "epochs": options["epochs"], "dropout": 0.0, "tf32": False}
    default_kernels = "stacked" if torch.device(device).type == "cuda" else "per_run"
    with no_tf32():
        for norm in ("none", "batch"):
            alone = models(norm)
            reference = [
                fit(m, dataset, seed=s, device=device, **options)
                for m, s in zip(alone, seeds, strict=True)
            ]
            entry = {}
            # "vmap": torch.func over any module, the kernels user models stack with; timed
            # beside the grouped and per-run kernels so the faster one can be kept on a GPU.
            for kernels in dict.fromkeys((default_kernels, "stacked", "per_run", "vmap")):
                stacked = models(norm)
                started = time.perf_counter()
                with graph_warnings() as caught:
                    histories = fit_stacked(
                        stacked, dataset, seeds=seeds, device=device, kernels=kernels, **options
                    )
                seconds = time.perf_counter() - started
                metric_diff = {
                    key: max(
                        _max_diff(h.history[key], r.history[key])
                        for h, r in zip(histories, reference, strict=True)
                    )
                    for key in keys
                }
                weight_diff, weight_scale = 0.0, 0.0
                for a, b in zip(stacked, alone, strict=True):
                    for (_name, x), (_, y) in zip(
                        a.state_dict().items(), b.state_dict().items(), strict=True
                    ):
                        if x.is_floating_point():
                            weight_diff = max(weight_diff, float((x - y).abs().max()))
                            weight_scale = max(weight_scale, float(y.abs().max()))
                entry[kernels] = {
                    "seconds": round(seconds, 3),
                    "max_abs_diff_per_metric": {
                        k: float(f"{v:.3g}") for k, v in metric_diff.items()
                    },
                    "max_abs_diff_weights": float(f"{weight_diff:.3g}"),
                    "max_rel_diff_weights": float(f"{weight_diff / max(weight_scale, 1e-30):.3g}"),
                    "final_val_accuracy": [
                        round(h.history["val_accuracy"][-1], 4) for h in histories
                    ],
                    "fit_final_val_accuracy": [
                        round(r.history["val_accuracy"][-1], 4) for r in reference
                    ],
                    # captured unless the engine warned that it fell back to eager
                    "cuda_graphs_captured": torch.device(device).type == "cuda" and not caught,
                    "graph_warnings": caught,
                }
                _note(f"parity {norm} kernels={kernels}: {json.dumps(entry[kernels])}")
            result[norm] = entry
    return result


# ------------------------------------------------------------------------------- 2 study
def step_study(spec, dataset, device: str, size: dict) -> dict:
    import torch

    from bnlab.study.engines import get_engine

    requests = study_requests(spec, dataset, size["study_epochs"], size["study_seeds"])
    engine = get_engine("stacked", (), device)
    groups = engine.plan(requests)
    epochs = requests[0].fit_options["epochs"]

    def one_epoch(r):
        return type(r)(
            r.study, r.variant, r.seed, r.preset, r.model_options,
            {**r.fit_options, "epochs": 1}, r.data_key,
        )  # fmt: skip

    def train(groups_) -> list:
        done = []
        for group in groups_:
            for request, outcome in engine.train(group, dataset, device=device):
                if isinstance(outcome, Exception):
                    raise RuntimeError(f"{request.key}: {outcome!r}") from outcome
                done.append((request, outcome))
        return done

    with graph_warnings() as caught:
        train([[one_epoch(r) for r in g] for g in groups])  # warm-up, untimed
        if torch.device(device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        start = time.perf_counter()
        done = train(groups)
        _sync(device)
        seconds = time.perf_counter() - start
    per_variant: dict[str, list] = {}
    for request, history in done:
        per_variant.setdefault(request.variant, []).append(history)
    summary = {}
    for name, hs in per_variant.items():
        finals = [h.history["val_accuracy"][-1] for h in hs]
        mean = sum(finals) / len(finals)
        sd = (sum((v - mean) ** 2 for v in finals) / max(1, len(finals) - 1)) ** 0.5
        summary[name] = {
            "runs": len(hs),
            "final_val_accuracy_mean": round(mean, 4),
            "final_val_accuracy_sd": round(sd, 4),
            # each run's share of its stack's wall-clock time
            "per_model_s": round(sum(h.seconds for h in hs) / len(hs), 4),
        }
    out = {
        "runs": len(done),
        "variants": list(per_variant),
        "epochs": epochs,
        "stacks": [len(g) for g in groups],
        "fit_options": {k: v for k, v in requests[0].fit_options.items()},
        "seconds": round(seconds, 3),
        "per_model_s": round(seconds / len(done), 5),
        "per_variant": summary,
        "graph_warnings": caught,
        "target_s": STUDY_TARGET_S,
        "target_met": seconds <= STUDY_TARGET_S,
    }
    if torch.device(device).type == "cuda":
        out["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    _note(f"study: {len(done)} runs x {epochs} epochs in {seconds:.2f} s")
    return out


# ------------------------------------------------------------------------------- 3 keras
def step_keras(args, device: str, size: dict, study: dict | None, source: str) -> dict:
    if source != "fashion_mnist":
        return {"skipped": f"the seed's Keras code needs Fashion-MNIST; the data are {source}"}
    python = args.keras_python or sys.executable
    probe = subprocess.run(
        [python, "-c", "import importlib.util as u; print(int(bool(u.find_spec('tensorflow'))))"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    backend = args.keras_backend or ("tensorflow" if probe.stdout.strip() == "1" else "torch")
    epochs = size["keras_epochs"]
    command = [
        python, str(HERE / "study_speed.py"), "--keras-worker", "--epochs", str(epochs),
        "--keras-runs", "1", "--data-dir", str(args.data_dir),
    ]  # fmt: skip
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": path}
    if device == "cpu":  # the dry run: Keras on the CPU as well, on one thread
        env.update(CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1")
        command += ["--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"keras worker exit {done.returncode}: {tail}")
    worker = json.loads(done.stdout.strip().splitlines()[-1])
    if "skipped" in worker:
        return {"skipped": worker["skipped"], "backend": backend}
    (variant,) = worker["per_variant_per_model_s"]
    measured = worker["per_variant_per_model_s"][variant]
    extrapolated = measured / epochs * 100
    out = {
        "backend": backend,
        "keras": worker.get("keras"),
        "tensorflow": worker.get("tensorflow"),
        "gpus_visible_to_keras": worker.get("gpus_visible"),
        # tensorflow-cpu, or a TensorFlow without its CUDA libraries, trains on the CPU
        "keras_on_gpu": bool(worker.get("gpus_visible")),
        "variant": variant,
        "epochs_measured": epochs,
        "measured_s": round(measured, 3),
        "extrapolated": True,
        "extrapolated_to_epochs": 100,
        "per_model_s_100_epochs_extrapolated": round(extrapolated, 2),
        "final_val_accuracy": worker["mean_final_test_accuracy"][variant],
        "loadavg": worker.get("loadavg"),
    }
    bnlab = (((study or {}).get("per_variant") or {}).get(variant) or {}).get("per_model_s")
    study_epochs = (study or {}).get("epochs")
    if bnlab:
        # bnlab's per-model time scaled to 100 epochs too when the study ran fewer (dry run).
        bnlab_100 = bnlab * 100 / study_epochs
        out["bnlab_stacked_per_model_s_100_epochs"] = round(bnlab_100, 5)
        out["ratio_extrapolated"] = round(extrapolated / bnlab_100, 1)
        out["target_ratio"] = KERAS_TARGET_RATIO
        out["target_met"] = out["ratio_extrapolated"] >= KERAS_TARGET_RATIO
    _note(f"keras ({backend}): {json.dumps(out)}")
    return out


# ------------------------------------------------------------------------- 4 throughput
def step_k_throughput(dataset, device: str, size: dict, deadline: float) -> dict:
    import stacked_scaling
    import torch

    from bnlab.models import build
    from bnlab.train import seeded

    args = SimpleNamespace(
        batch_size=64, steps=size["k_steps"], warmup=size["k_warmup"], kernels=None
    )

    def models(k: int):
        out = []
        for seed in range(k):
            with seeded(seed):
                out.append(build("fashion_cnn", norm="batch"))
        return out

    dev = torch.device(device)
    seq = stacked_scaling.time_sequential(models(1)[0], dataset, args, dev)
    rows, skipped = [], []
    for k in size["ks"]:
        if time.perf_counter() > deadline:
            skipped.append(k)
            continue
        with graph_warnings() as caught:
            step = stacked_scaling.time_stacked(models(k), dataset, k, args, dev)
        rows.append(
            {
                "k": k,
                "step_ms": round(1e3 * step, 3),
                "run_steps_per_s": round(k / step, 1),
                "speedup_vs_fit": round(k / step * seq, 2),
                "graph_warnings": caught,
            }
        )
        _note(f"K={k}: {json.dumps(rows[-1])}")
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return {
        "preset": "fashion_cnn",
        "norm": "batch",
        "batch_size": args.batch_size,
        "steps": args.steps,
        "fit_step_ms": round(1e3 * seq, 3),
        "stacked": rows,
        "skipped_for_time": skipped,
    }


# ---------------------------------------------------------------------------------- main
def device_slug(device: str, dry: bool) -> str:
    import torch

    if dry:
        return "cpu-dry-run"
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="every step tiny, on the CPU")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument(
        "--keras-python",
        default=os.environ.get("BNLAB_KERAS_PYTHON"),
        help="interpreter for the Keras step (default: this one)",
    )
    parser.add_argument(
        "--keras-backend",
        choices=("tensorflow", "torch"),
        default=None,
        help="default: tensorflow when that interpreter has it, else torch",
    )
    parser.add_argument(
        "--steps",
        default="parity,study,keras,k_throughput",
        help="comma-separated subset of parity, study, keras, k_throughput (default: all)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=480.0,
        help="wall-clock budget: larger K are skipped once it is spent (default 480)",
    )
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = set(steps) - {"parity", "study", "keras", "k_throughput"}
    if unknown:
        parser.error(f"--steps: unknown {sorted(unknown)}")
    device = args.device or ("cpu" if args.dry_run else "cuda")

    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device here (torch.cuda.is_available() is False); "
            "use --dry-run to check the script on the CPU",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("BNLAB_NO_PROGRESS", "1")
    args.device, args.steps = device, steps
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

    device, steps = args.device, args.steps
    if args.dry_run:
        # One thread everywhere: a dry run must not collapse on a shared, busy CI machine.
        torch.set_num_threads(1)
        os.environ["BNLAB_THREADS"] = "1"
    size = SIZES["dry" if args.dry_run else "full"]
    t0 = time.perf_counter()
    deadline = t0 + args.budget_s
    spec, dataset, source = load_study(args.data_dir, size["rows"], args.dry_run)
    out: dict = {
        "benchmark": "gpu_check",
        "dry_run": args.dry_run,
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "data": source,
        "train_test": [int(dataset.x_train.shape[0]), int(dataset.x_test.shape[0])],
        "loadavg_start": loadavg(),
        "steps": {},
    }
    failed = []
    for name in ("parity", "study", "keras", "k_throughput"):
        if name not in steps:
            continue
        start = time.perf_counter()
        try:
            if name == "parity":
                result = step_parity(dataset, device, size)
            elif name == "study":
                result = step_study(spec, dataset, device, size)
            elif name == "keras":
                result = step_keras(args, device, size, out["steps"].get("study"), source)
            else:
                result = step_k_throughput(dataset, device, size, deadline)
        except Exception as error:  # one broken step must not lose the others' numbers
            failed.append(name)
            result = {
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc().splitlines()[-8:],
            }
            _note(f"{name} FAILED: {result['error']}")
        result["step_s"] = round(time.perf_counter() - start, 2)
        out["steps"][name] = result
    out["failed_steps"] = failed
    out["loadavg_end"] = loadavg()
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    path = args.out or HERE / "results" / f"gpu-{device_slug(device, args.dry_run)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    out["written_to"] = str(path)
    print(json.dumps(out))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
