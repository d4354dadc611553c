"""Data normalisation (every form `data` may take) and the Finding/Diagnosis outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from rich.console import Console

import bnlab
from bnlab.doctor import Diagnosis, Finding, diagnose
from bnlab.doctor.sources import as_sources
from bnlab.errors import ConfigError, DataError


def _passes(source):
    return [(x.shape[0], None if y is None else y.shape[0]) for x, y in source.batches()]


def test_every_data_form_gives_the_same_batches():
    x = torch.arange(10 * 3, dtype=torch.float32).reshape(10, 3)
    y = torch.arange(10)
    tensors, _ = as_sources((x, y), batch_size=4)
    assert _passes(tensors) == [(4, 4), (4, 4), (2, 2)]
    arrays, _ = as_sources((x.numpy(), y.numpy()), batch_size=4)
    assert _passes(arrays) == [(4, 4), (4, 4), (2, 2)]
    unlabelled, _ = as_sources(x.numpy().astype(np.uint8), batch_size=4)
    xb, yb = next(unlabelled.batches())
    assert xb.dtype == torch.float32 and yb is None  # uint8 pixels keep their 0-255 scale
    ds = torch.utils.data.TensorDataset(x, y)
    assert _passes(as_sources(ds, batch_size=4)[0]) == [(4, 4), (4, 4), (2, 2)]
    loader = torch.utils.data.DataLoader(ds, batch_size=3)  # keeps its own batch size
    # 10 = 3 + 3 + 3 + 1: a one-sample batch joins the previous one (BN needs 2 in train mode)
    assert _passes(as_sources(loader, batch_size=999)[0]) == [(3, 3), (3, 3), (4, 4)]
    listed = [(x[:5], y[:5]), {"x": x[5:], "y": y[5:]}]
    assert _passes(as_sources(listed)[0]) == [(5, 5), (5, 5)]


def test_a_bnlab_dataset_gives_its_training_and_test_splits():
    data = bnlab.data.load("digits")
    train, test = as_sources(data, batch_size=1000)
    assert train.layout == "NCHW" and train.num_samples == data.x_train.shape[0]
    assert test.num_samples == data.x_test.shape[0]
    by_name, _ = as_sources("digits")
    assert by_name.num_samples == train.num_samples


def test_bad_data_is_a_data_error_naming_the_problem():
    with pytest.raises(DataError, match="x has 5 samples but y has 4"):
        as_sources((torch.zeros(5, 2), torch.zeros(4)))
    with pytest.raises(DataError, match="one-shot iterator"):
        as_sources(iter([torch.zeros(2, 2)]))
    with pytest.raises(DataError, match="not usable"):
        as_sources(42)
    with pytest.raises(ConfigError, match="batch_size"):
        as_sources((torch.zeros(5, 2), torch.zeros(5)), batch_size=0)


def test_diagnose_validates_its_arguments_and_the_input_shape():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4), torch.nn.BatchNorm1d(4))
    data = (torch.rand(20, 1, 8, 8), torch.randint(0, 4, (20,)))
    for kwargs, name in [({"batch_size": 0}, "batch_size"), ({"max_batches": -1}, "max_batches"),
                         ({"steps": 1.5}, "steps"), ({"loss": "mse"}, "loss")]:  # fmt: skip
        with pytest.raises(ConfigError, match=name):
            diagnose(model, data, **kwargs)
    with pytest.raises(DataError, match=r"\(1, 28, 28\) do not fit the model"):
        diagnose(model, (torch.rand(20, 1, 28, 28), torch.randint(0, 4, (20,))))


def test_max_batches_limits_each_pass():
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)
    )
    diag = diagnose(
        model, (torch.rand(100, 3), torch.randint(0, 2, (100,))), batch_size=10, max_batches=3
    )
    assert diag.model_info["samples"] == 30


def _finding(**kw):
    base = dict(id="stale-running-stats", severity="error", message="m", fix="f", evidence={})
    return Finding(**{**base, **kw})


def test_findings_validate_and_serialise_numpy_numbers():
    with pytest.raises(ValidationError, match="kebab-case"):
        _finding(id="Stale_Stats")
    with pytest.raises(ValidationError):
        _finding(severity="fatal")
    f = _finding(evidence={"acc": np.float32(0.5), "idx": np.arange(3), "t": torch.tensor([1.0]),
                           "nan": float("nan")})  # fmt: skip
    assert f.evidence == {"acc": 0.5, "idx": [0, 1, 2], "t": [1.0], "nan": None}
    diag = Diagnosis(findings=[_finding(severity="info", id="bias-before-bn"), f], passes=2)
    data = json.loads(diag.to_json())
    assert [x["id"] for x in data["findings"]] == ["stale-running-stats", "bias-before-bn"]
    assert data["healthy"] is False and data["passes"] == 2
    assert Diagnosis(findings=[_finding(severity="info", id="bias-before-bn")]).healthy


def test_rich_and_html_renderings_show_every_finding_escaped():
    diag = Diagnosis(
        findings=[_finding(layer="conv<1>", message="a <b>bold</b> claim", evidence={"x": 1})],
        model_info={
            "framework": "torch",
            "bn_layers": 1,
            "train_mode_accuracy": 0.9,
            "inference_accuracy": 0.5,
        },  # fmt: skip
        passes=2,
    )
    html = diag.html()
    assert html.startswith('<section class="bnlab-doctor">') and html.endswith("</section>")
    assert "a &lt;b&gt;bold&lt;/b&gt; claim" in html and "conv&lt;1&gt;" in html
    console = Console(record=True, width=200)
    console.print(diag)
    text = console.export_text()
    assert "stale-running-stats" in text and "0.9000 in train mode" in text
    console = Console(record=True, width=100)
    console.print(Diagnosis())
    assert "healthy" in console.export_text()


def test_keras_inputs_are_matched_to_the_model_layout(keras):
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization(),
        keras.layers.Flatten(), keras.layers.Dense(3),
    ])  # fmt: skip
    x, y = torch.rand(12, 1, 8, 8) * 255, torch.randint(0, 3, (12,))
    nchw = diagnose(model, (x, y))  # channels-first tensors are transposed for Keras
    nhwc = diagnose(model, (x.permute(0, 2, 3, 1).numpy(), y.numpy()))
    assert nchw.model_info["inference_accuracy"] == nhwc.model_info["inference_accuracy"]
    with pytest.raises(DataError, match=r"\(1, 28, 28\) do not fit the model"):
        diagnose(model, (torch.rand(12, 1, 28, 28), y))
