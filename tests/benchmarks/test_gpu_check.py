"""``benchmarks/gpu_check.py --dry-run``: every step of the GPU check, tiny, on the CPU.

The numbers of a dry run mean nothing as timings; what is asserted is that every step runs,
that the JSON holds what the GPU run will be read for, and the parity step's CPU facts (a
stack with ``fit``'s own kernels is ``fit`` bit for bit; the grouped kernels agree to float
rounding).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(capsys, *argv) -> tuple[int, dict]:
    code = _module().main(["--dry-run", *argv])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_dry_run_every_step_on_random_images(tmp_path, capsys):
    out_file = tmp_path / "gpu.json"
    code, out = _run(capsys, "--data-dir", str(tmp_path / "no-data"), "--out", str(out_file))
    assert code == 0 and out["failed_steps"] == []
    assert out["dry_run"] is True and out["device"] == "cpu"
    assert out["data"].startswith("random images")
    assert json.loads(out_file.read_text())["steps"] == out["steps"]
    steps = out["steps"]

    parity = steps["parity"]
    for norm in ("none", "batch"):
        per_run, grouped = parity[norm]["per_run"], parity[norm]["stacked"]
        # fit's own kernels: every metric and weight equal to fit's on CPU
        assert per_run["max_abs_diff_weights"] == 0.0
        assert set(per_run["max_abs_diff_per_metric"].values()) == {0.0}
        assert per_run["final_val_accuracy"] == per_run["fit_final_val_accuracy"]
        assert grouped["cuda_graphs_captured"] is False and grouped["graph_warnings"] == []
        assert grouped["max_rel_diff_weights"] >= 0
    # One grouped convolution sums in another order. With BN that stays rounding; without,
    # on random raw pixels, Adam (epsilon 1e-7) amplifies it to ~2 % of the weights within
    # 4 steps: the step reports the drift, it does not hide it.
    assert parity["batch"]["stacked"]["max_rel_diff_weights"] < 1e-4
    assert parity["batch"]["stacked"]["max_abs_diff_per_metric"]["loss"] < 1e-4

    study = steps["study"]
    assert study["runs"] == 4 and study["variants"] == ["no_bn", "bn"]
    assert study["stacks"] == [2, 2] and study["epochs"] == 1
    assert study["fit_options"]["precise_eval"] is True  # the study's own settings
    assert study["seconds"] > 0 and study["per_variant"]["bn"]["runs"] == 2

    assert "Fashion-MNIST" in steps["keras"]["skipped"]

    k_rows = steps["k_throughput"]["stacked"]
    assert [r["k"] for r in k_rows] == [1, 2]
    assert all(r["step_ms"] > 0 and r["run_steps_per_s"] > 0 for r in k_rows)


@pytest.mark.slow
@pytest.mark.keras
def test_dry_run_keras_step_on_the_real_data(shared_data, keras, tmp_path, capsys):
    code, out = _run(
        capsys, "--data-dir", str(shared_data), "--out", str(tmp_path / "g.json"),
        "--steps", "study,keras",
    )  # fmt: skip
    assert code == 0, out["failed_steps"]
    keras_step = out["steps"]["keras"]
    assert keras_step["backend"] in ("tensorflow", "torch")
    assert keras_step["extrapolated"] is True and keras_step["epochs_measured"] == 1
    # 1 epoch measured, 100 extrapolated, compared per model with the stack's no_bn runs
    hundred = keras_step["measured_s"] * 100
    assert abs(keras_step["per_model_s_100_epochs_extrapolated"] - hundred) <= 1e-3 * hundred
    assert keras_step["ratio_extrapolated"] > 0
    assert 0 <= keras_step["final_val_accuracy"] <= 1


def test_no_cuda_is_a_one_line_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert _module().main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
