"""Studies of the user's own model: a torch factory file, a .keras file, a Keras factory.

Each study trains small models on the embedded digits (8x8) for 2 epochs and writes the HTML
report; the stored runs say which path each variant took.
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

import bnlab.study as study
from bnlab.errors import ConfigError, DataError
from bnlab.report import render_html

keras = pytest.importorskip("keras")

TORCH_NET = """
import torch
from torch import nn


def build(num_classes=10, width=8):
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(width * 16, num_classes),
    )


def broken(width=8):
    raise RuntimeError("width must be even")


def not_a_model():
    return 42
"""


def _spec(model: dict, variants: dict, **extra) -> dict:
    return {
        "name": "own",
        "seeds": 2,
        "model": model,
        "data": {"name": "digits", "scale": "unit"},
        "train": {"epochs": 2, "batch_size": 64},
        "variants": variants,
        **extra,
    }


def _params(result) -> dict[str, str]:
    """variant -> the model path its runs recorded (params_json.model_path in the store)."""
    import sqlite3

    with sqlite3.connect(result.store) as conn:
        rows = conn.execute("select variant, params_json from runs").fetchall()
    return {variant: json.loads(params).get("model_path", "") for variant, params in rows}


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_torch_factory_study_with_bn_surgery_end_to_end(tmp_path):
    _write(tmp_path, "mynet.py", TORCH_NET)
    spec_file = tmp_path / "own.toml"
    spec_file.write_text(
        textwrap.dedent(
            """
            name = "own_torch"
            seeds = 2
            [model]
            factory = "mynet.py:build"
            width = 8
            [data]
            name = "digits"
            scale = "unit"
            [train]
            epochs = 2
            batch_size = 64
            [variants.bn_m099]
            bn_momentum = 0.99
            [variants.bn_m080]
            bn_momentum = 0.8
            [variants.no_bn]
            norm = "none"
            """
        )
    )
    result = study.run(spec_file, store=tmp_path / "runs.db", progress=False)
    assert result.trained == 6 and result.engine == "sequential"
    assert set(result.summary["variant"]) == {"bn_m099", "bn_m080", "no_bn"}
    assert (result.runs["final_val_accuracy"] > 0.3).all()  # 2 epochs learn something
    # the three variants are different models: momentum changes only inference-mode metrics
    acc = result.runs.groupby("variant")["final_val_accuracy"].mean()
    assert acc["no_bn"] != acc["bn_m099"] and acc["bn_m080"] != acc["bn_m099"]
    html = render_html(tmp_path / "runs.db", tmp_path / "report.html").read_text()
    assert "bn_m080" in html and "no_bn" in html
    # the relative path was resolved against the TOML's folder and stored absolute
    stored = study.load_spec(tmp_path / "runs.db")
    assert stored.model.factory == f"{tmp_path / 'mynet.py'}:build"


def test_torch_factory_errors_name_field_and_value(tmp_path):
    _write(tmp_path, "mynet.py", TORCH_NET)
    net = str(tmp_path / "mynet.py")
    cases = [
        ({"factory": str(tmp_path / "nope.py") + ":build"}, DataError, "model.factory: no such"),
        ({"factory": f"{net}:biuld"}, ConfigError, "did you mean 'build'"),
        ({"factory": f"{net}:broken"}, ConfigError, "width must be even"),
        ({"factory": f"{net}:not_a_model"}, ConfigError, "returned a int, not a torch.nn.Module"),
        ({"factory": f"{net}:build", "preset": "digits_cnn"}, ConfigError, "exactly one of"),
        ({"keras": str(tmp_path / "none.keras")}, DataError, "model.keras: no such file"),
    ]
    for model, error, text in cases:
        with pytest.raises(error, match=text.replace("(", r"\(")):
            study.run(_spec(model, {"a": {}}), store=tmp_path / "e.db", progress=False)
    with pytest.raises(ConfigError, match=r"variants\.b\.bn_momentum: .*no BN layer 'x'"):
        study.run(
            _spec({"factory": f"{net}:build"}, {"b": {"bn_momentum": {"x": 0.8}}}),
            store=tmp_path / "e.db",
            progress=False,
        )


def _keras_cnn(batch_norm=False, extra=None):
    layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu")]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization())
    layers += [keras.layers.MaxPooling2D(2), keras.layers.Flatten()]
    layers += extra or []
    layers += [keras.layers.Dense(10, activation="softmax")]
    return keras.Sequential(layers)


def test_keras_file_study_translates_and_applies_surgery(tmp_path):
    _keras_cnn(batch_norm=True).save(tmp_path / "net.keras")
    spec = _spec(
        {"keras": str(tmp_path / "net.keras")},
        {"base": {}, "m080": {"bn_momentum": 0.8}, "no_bn": {"norm": "none"}},
    )
    result = study.run(spec, store=tmp_path / "runs.db", progress=False)
    assert result.trained == 6 and result.engine == "keras"
    assert set(_params(result).values()) == {"translated"}
    assert (result.runs["final_val_accuracy"] > 0.15).all()  # chance is 0.1
    render_html(tmp_path / "runs.db", tmp_path / "report.html")


def test_keras_factory_study_and_unsupported_layer_falls_back_to_keras(tmp_path, capfd):
    _write(
        tmp_path,
        "train.py",
        """
        import keras


        def create_model(batch_norm=False, layer_norm=False):
            layers = [keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu")]
            if batch_norm:
                layers.append(keras.layers.BatchNormalization())
            layers += [keras.layers.Flatten()]
            if layer_norm:
                layers.append(keras.layers.LayerNormalization())
            layers.append(keras.layers.Dense(10, activation="softmax"))
            return keras.Sequential(layers)
        """,
    )
    spec = _spec(
        {"keras_factory": str(tmp_path / "train.py") + ":create_model"},
        {"no_bn": {}, "bn": {"batch_norm": True}, "ln": {"layer_norm": True}},
    )
    result = study.run(spec, store=tmp_path / "runs.db", progress=False)
    assert result.engine == "keras"
    assert _params(result) == {"no_bn": "translated", "bn": "translated", "ln": "keras"}
    note = capfd.readouterr().err
    assert "note: variant 'ln': layer 'layer_normalization" in note and "trains with Keras" in note
    assert (result.runs["final_val_accuracy"] > 0.15).all()  # chance is 0.1
    render_html(tmp_path / "runs.db", tmp_path / "report.html")


def test_stacked_engine_stacks_user_torch_models_with_vmap(tmp_path, capfd):
    # kernels="vmap" stacks them (tests/train/test_stacked_vmap.py: equal to sequential;
    # a model vmap cannot train as fit does falls back with a note).
    _write(tmp_path, "mynet.py", TORCH_NET)
    spec = _spec({"factory": str(tmp_path / "mynet.py") + ":build"}, {"a": {}}, seeds=1)
    spec["train"]["epochs"] = 1
    result = study.run(spec, store=tmp_path / "r.db", engine="stacked", progress=False)
    assert result.engine == "stacked"
    assert "does not stack" not in capfd.readouterr().err


def test_translated_model_equals_keras_after_training_steps_of_its_own(tmp_path):
    """The translation is the Keras model: same probabilities for the same weights."""
    from bnlab.models.keras_translate import output_probabilities, translate

    model = _keras_cnn(batch_norm=True)
    module = translate(model)
    x = torch.rand(5, 1, 8, 8)
    want = model(x.permute(0, 2, 3, 1).numpy(), training=False)
    got = output_probabilities(module, module(x))
    torch.testing.assert_close(got, torch.as_tensor(keras.ops.convert_to_numpy(want)),
                               atol=1e-5, rtol=0)  # fmt: skip


def test_keras_file_reinitialize_draws_fresh_weights_per_seed_or_keeps_the_saved_ones(tmp_path):
    from bnlab.models.user import build_user_model, descriptor

    saved = _keras_cnn(batch_norm=True)
    saved.save(tmp_path / "net.keras")
    ref = [w.numpy() for w in saved.weights]

    def weights(reinitialize, seed):
        name = descriptor("keras", str(tmp_path / "net.keras"), reinitialize)
        built = build_user_model(name, {}, seed=seed)
        assert built.path == "translated"
        return [w.numpy() for w in built.keras.weights]

    for a, b in zip(weights(False, 0), ref, strict=True):
        assert (a == b).all()
    fresh0, fresh0_again, fresh1 = weights(True, 0), weights(True, 0), weights(True, 1)
    kernel = 0  # the first conv kernel: drawn by glorot_uniform
    assert not (fresh0[kernel] == ref[kernel]).all()
    assert (fresh0[kernel] == fresh0_again[kernel]).all()
    assert not (fresh0[kernel] == fresh1[kernel]).all()
