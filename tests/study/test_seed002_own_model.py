"""Seed 002's own ``create_model`` (examples/seed002_model.py) as a user's Keras factory gives
the built-in ``seed002`` preset study's statistics, at reduced size: 4 seeds x 10 epochs on
the real Fashion-MNIST (train = first 1000 images, test = the next 1000).

"The same statistics" here means: BN is better in both studies (same direction), and each
variant's 95 % interval of the final test accuracy overlaps the other study's. The two
studies cannot be equal run for run: the user's model draws its initial weights from Keras's
initializers under ``keras.utils.set_random_seed``, the preset from torch's RNG.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import bnlab.study as study
from bnlab.study.spec import read_spec_source

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "seed002_own_model.toml"


def _small(raw: dict) -> dict:
    """The built-in study at reduced size, on the seed's own raw pixels (its variant pair
    with ``scale = "unit"`` is another question, and the user's file does not have it)."""
    raw = dict(raw, seeds=4)
    raw["train"] = dict(raw["train"], epochs=10, precise_eval=False)
    raw["variants"] = {k: v for k, v in raw["variants"].items() if k in ("no_bn", "bn")}
    return raw


def test_seed002_create_model_reproduces_the_preset_study(tmp_path, shared_data):
    pytest.importorskip("keras")
    t0 = time.perf_counter()
    # two worker processes: the fastest way to train this CNN on 2 CPU cores (README)
    own = study.run(EXAMPLE, store=tmp_path / "own.db", data_dir=shared_data, jobs=2)
    preset = study.run(
        _small(read_spec_source("seed002")),
        store=tmp_path / "preset.db",
        data_dir=shared_data,
        engine="sequential",
        jobs=2,
    )
    seconds = time.perf_counter() - t0
    rows = {}
    for name, result in (("own", own), ("preset", preset)):
        assert result.trained == 8
        s = result.summary.set_index("variant")
        rows[name] = s
        assert s.loc["bn", "final_val_accuracy_mean"] > s.loc["no_bn", "final_val_accuracy_mean"]
    for variant in ("no_bn", "bn"):
        a, b = rows["own"].loc[variant], rows["preset"].loc[variant]
        assert a["final_val_accuracy_ci_low"] <= b["final_val_accuracy_ci_high"], variant
        assert b["final_val_accuracy_ci_low"] <= a["final_val_accuracy_ci_high"], variant
    print(f"seed002 own model vs preset, 2 x 8 runs: {seconds:.0f} s")
