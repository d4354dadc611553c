"""``bnlab export``: ONNX round trip of the seed presets, and a loud failure on a mismatch."""

from __future__ import annotations

import re
import textwrap

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip(
    "onnxruntime", reason="the onnx extra is not installed (pip install bnlab[onnx])"
)

from bnlab import models  # noqa: E402
from bnlab.cli.app import app  # noqa: E402

# The seeds' presets (000-004), the large-input ones at a smaller size to keep the test fast.
SEED_PRESETS = {
    "malimg_cnn": {"input_shape": (3, 32, 32)},
    "scenes_cnn": {"input_shape": (3, 48, 48)},
    "fashion_cnn": {},
    "cifar_small": {},
    "cifar_deep": {},
    "circles_mlp": {"bn_position": "before_activation"},
}
FACTORIES = """
import torch
import bnlab.models

OPTIONS = {options!r}


def build(name):
    return bnlab.models.build(name, norm="batch", **OPTIONS[name])


{defs}


class WrongEpsilonBN(torch.nn.BatchNorm1d):
    # What a broken exporter does: the exported graph uses another epsilon than eager mode.
    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return torch.nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, 0.5
            )
        return super().forward(x)


def broken():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), WrongEpsilonBN(3))
    model[1].running_var.fill_(0.05)
    return model
"""


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    defs = "\n\n".join(f"def {name}():\n    return build({name!r})" for name in SEED_PRESETS)
    text = FACTORIES.format(options=SEED_PRESETS, defs=defs)
    (folder / "factories.py").write_text(textwrap.dedent(text))
    return folder


def _trained_like_weights(name, folder):
    """Non-trivial BN statistics (fresh ones are the identity) saved as a state_dict."""
    model = models.build(name, norm="batch", **SEED_PRESETS[name])
    g = torch.Generator().manual_seed(len(name))
    state = model.state_dict()
    for key, value in state.items():
        if key.endswith(("moving_mean", "running_mean")):
            value.copy_(torch.randn(value.shape, generator=g) * 0.3)
        elif key.endswith(("moving_variance", "running_var")):
            value.copy_(torch.rand(value.shape, generator=g) + 0.5)
        elif key.endswith(("gamma", "beta")):
            value.copy_(torch.randn(value.shape, generator=g) * 0.5 + (key.endswith("gamma")))
    path = folder / f"{name}.pt"
    torch.save(state, path)
    return path, models.resolve_options(name, **SEED_PRESETS[name])["input_shape"]


def _run(args, folder, monkeypatch):
    monkeypatch.chdir(folder)
    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.mark.parametrize("name", list(SEED_PRESETS))
@pytest.mark.parametrize("fold", [False, True], ids=["plain", "folded"])
def test_seed_presets_round_trip_within_1e5(factories, monkeypatch, name, fold):
    weights, shape = _trained_like_weights(name, factories)
    out = factories / f"{name}-{fold}.onnx"
    args = ["export", f"factories:{name}", "--weights", str(weights), "-o", str(out),
            "--input-shape", ",".join(map(str, shape)), "--samples", "16"]  # fmt: skip
    result = _run(args + (["--fold"] if fold else []), factories, monkeypatch)
    assert result.exit_code == 0, result.output
    diff, allowed = map(
        float, re.search(r"max \|difference\| (\S+) \(allowed (\S+)\)", result.output).groups()
    )
    assert out.is_file() and diff <= allowed < 1e-3
    # checked independently: onnxruntime on fresh samples against torch's eval output
    import onnxruntime

    model = getattr(__import__("factories"), name)()
    model.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(5, *shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        expected = model.eval()(x)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = torch.as_tensor(session.run(None, {"input": x.numpy()})[0])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_export_on_named_data(factories, monkeypatch):
    source = factories / "digits_factory.py"
    source.write_text(
        "import bnlab.models\n\ndef build():\n    return bnlab.models.build('digits_cnn', norm='batch')\n"
    )
    out = factories / "digits.onnx"
    result = _run(["export", "digits_factory:build", "-o", str(out), "--data", "digits", "--fold"],
                  factories, monkeypatch)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "onnxruntime matches torch on 256 samples" in result.output


def test_mismatch_fails_loudly_with_the_difference(factories, monkeypatch):
    out = factories / "broken.onnx"
    result = _run(
        ["export", "factories:broken", "-o", str(out), "--input-shape", "4"], factories, monkeypatch
    )
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "ONNX output differs from torch's: max |difference|" in lines[0]


def test_no_data_is_a_one_line_usage_error(factories, monkeypatch):
    result = _run(["export", "factories:broken", "-o", "x.onnx"], factories, monkeypatch)
    assert result.exit_code == 2
    assert "--data DATA or --input-shape" in result.output


def test_a_bnlab_model_is_checked_on_its_recorded_input_shape(factories, monkeypatch):
    out = factories / "recorded.onnx"
    result = _run(
        ["export", "factories:fashion_cnn", "-o", str(out), "--samples", "4"],
        factories,
        monkeypatch,
    )
    assert result.exit_code == 0, result.output
    assert "matches torch on 4 samples" in result.output
