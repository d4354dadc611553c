"""kernels="vmap" (torch.func stack_module_state + functional_call + vmap) trains the same
runs as the stacked layers, on an MLP with BN and a CNN with BN, and stacks a user module the
stacked layers refuse."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnlab import models
from bnlab.data import load
from bnlab.errors import ConfigError
from bnlab.train import fit, seeded
from bnlab.train.stacked import StackingError, fit_stacked, stack_signature, vmap_signature


def build(preset: str, seed: int, **options) -> nn.Module:
    with seeded(seed):
        return models.build(preset, **options)


def assert_same_runs(a, b, tol: float) -> None:
    for ha, hb in zip(a, b, strict=True):
        assert set(ha.history) == set(hb.history)
        for key, values in ha.history.items():
            for x, y in zip(values, hb.history[key], strict=True):
                assert math.isclose(x, y, rel_tol=tol, abs_tol=tol), (key, x, y)


@pytest.mark.parametrize(
    "preset, data, options, kw",
    [
        ("circles_mlp", ("circles", {"n_samples": 200}), {"bn_momentum": 0.9, "l2": 0.01}, {}),
        ("digits_cnn", ("digits", {"train_range": [0, 160], "test_range": [160, 224]}), {}, {"batch_size": 16}),
    ],
)
def test_vmap_kernels_equal_the_stacked_layers(preset, data, options, kw):
    dataset = load(data[0], **data[1])
    seeds = [0, 1, 2]
    common = dict(seeds=seeds, epochs=2, optimizer="adam", progress=False, **kw)
    by_layers = fit_stacked([build(preset, s, **options) for s in seeds], dataset,
                            kernels="stacked", **common)
    vmapped = [build(preset, s, **options) for s in seeds]
    by_vmap = fit_stacked(vmapped, dataset, kernels="vmap", **common)
    # Same function, other kernels (batched vs grouped): float rounding apart.
    assert_same_runs(by_layers, by_vmap, 1e-4)
    assert by_vmap[0].params["kernels"] == "vmap"
    alone = build(preset, 0, **options)
    fit(alone, dataset, seed=0, **{k: v for k, v in common.items() if k != "seeds"})
    for p, q in zip(alone.state_dict().values(), vmapped[0].state_dict().values(), strict=True):
        torch.testing.assert_close(p.float(), q.float(), rtol=1e-3, atol=1e-4)


class Residual(nn.Module):
    """A user's module with its own forward: the stacked layers cannot stack it."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(2, 8)
        self.bn = nn.BatchNorm1d(8)
        self.out = nn.Linear(8, 1)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        return self.out(h + self.bn(h))


def test_vmap_stacks_a_user_module_and_matches_fit():
    dataset = load("circles", n_samples=200)
    with pytest.raises(StackingError):
        stack_signature(Residual())
    runs = []
    for s in (0, 1):
        torch.manual_seed(s)
        runs.append(Residual())
    assert vmap_signature(runs[0]) == vmap_signature(runs[1])
    torch.manual_seed(0)
    alone = Residual()
    h_alone = fit(alone, dataset, epochs=2, seed=0, progress=False)
    h_vmap = fit_stacked(runs, dataset, seeds=[0, 1], epochs=2, kernels="vmap", progress=False)
    assert_same_runs([h_alone], h_vmap[:1], 1e-4)
    torch.testing.assert_close(alone.bn.running_mean, runs[0].bn.running_mean, rtol=1e-4,
                               atol=1e-5)


def test_vmap_refuses_per_run_settings_it_cannot_hold():
    dataset = load("circles", n_samples=40)
    ms = [build("circles_mlp", 0), build("circles_mlp", 1, bn_momentum=0.8)]
    with pytest.raises(ConfigError, match="momentum"):
        fit_stacked(ms, dataset, seeds=[0, 1], epochs=1, kernels="vmap", progress=False)


USER_NET = '''
from torch import nn


def build(width=8):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(width * 16, 10),
    )


def build_with_dropout(width=8):
    return nn.Sequential(build(width), nn.Dropout(0.3), nn.Linear(10, 10))
'''


def _user_study(tmp_path, factory: str) -> dict:
    (tmp_path / "usernet.py").write_text(USER_NET)
    return {
        "name": "own",
        "seeds": 2,
        "model": {"factory": f"{tmp_path / 'usernet.py'}:{factory}"},
        "data": {"name": "digits", "scale": "unit", "train_range": [0, 320],
                 "test_range": [0, 160]},
        # SGD: Adam (epsilon 1e-7) turns the rounding differences of vmap's batched
        # convolution in near-zero gradients into lr-sized steps (fit_stacked's docstring),
        # which is the kernels' rounding, not the routing this checks.
        "train": {"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.05,
                  "optimizer_options": {"momentum": 0.9}},
        "variants": {"w8": {}, "w4": {"width": 4}},
    }


def test_stacked_study_of_a_user_torch_model_uses_vmap_and_equals_sequential(tmp_path, capfd):
    import bnlab.study as study

    spec = _user_study(tmp_path, "build")
    seq = study.run(spec, store=tmp_path / "seq.db", engine="sequential", progress=False)
    stk = study.run(spec, store=tmp_path / "stk.db", engine="stacked", progress=False)
    assert stk.engine == "stacked" and stk.trained == 4
    assert "does not stack" not in capfd.readouterr().err
    key = ["variant", "seed"]
    a = seq.runs.sort_values(key).reset_index(drop=True)
    b = stk.runs.sort_values(key).reset_index(drop=True)
    metrics = [c for c in a.columns if c.startswith("final_") and a[c].dtype.kind == "f"]
    assert "final_val_accuracy" in metrics and "final_val_loss" in metrics
    for column in metrics:
        for x, y in zip(a[column], b[column], strict=True):
            assert math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-4), (column, x, y)
    assert len(set(a["final_val_loss"])) == 4  # four different runs, not one compared 4 times
    assert (a["final_val_accuracy"] > 0.5).all()  # they learned (chance is 0.1)


def test_stacked_study_of_a_user_model_with_dropout_falls_back_with_a_note(tmp_path, capfd):
    import bnlab.study as study

    spec = _user_study(tmp_path, "build_with_dropout")
    spec["variants"] = {"w8": {}}
    spec["train"]["epochs"] = 1
    result = study.run(spec, store=tmp_path / "r.db", engine="stacked", progress=False)
    assert result.engine == "sequential"
    err = capfd.readouterr().err
    assert "engine 'stacked' does not stack variant 'w8'" in err and "dropout 0.3" in err
