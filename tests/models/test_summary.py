"""summary() / format_summary(): Keras counting, output shapes, model state untouched."""

from __future__ import annotations

import torch
from torch import nn

from bnlab.models import build, format_summary, summary


def test_output_shapes_are_the_seeds_channels_first():
    s = summary(build("fashion_cnn", norm="none"))
    shapes = {name: shape for name, _, shape, _ in s["layers"]}
    # seed 002 prints (None, 24, 24, 32) ... (None, 512), (None, 10) channels last
    assert shapes["conv1"] == (None, 32, 24, 24)
    assert shapes["pool1"] == (None, 32, 12, 12)
    assert shapes["conv2"] == (None, 32, 12, 12)
    assert shapes["pool2"] == (None, 32, 6, 6)
    assert shapes["conv3"] == (None, 32, 4, 4)
    assert shapes["flatten"] == (None, 512)
    assert shapes["dense"] == (None, 10)
    params = {name: p for name, _, _, p in s["layers"]}
    assert (params["conv1"], params["conv2"], params["conv3"], params["dense"]) == (
        832,
        16_416,
        9_248,
        5_130,
    )


def test_scene_shapes_at_full_size():
    # seed 001 (3-conv with BN): 226, 224, 112, 110, 109, 107, 53, flatten 44944, dense 6
    s = summary(build("scenes_cnn"))
    shapes = {name: shape for name, _, shape, _ in s["layers"]}
    assert shapes["pad"] == (None, 3, 226, 226)
    assert shapes["bn1"] == (None, 16, 224, 224)
    assert shapes["pool1"] == (None, 16, 112, 112)
    assert shapes["bn2"] == (None, 32, 110, 110)
    assert shapes["pool2"] == (None, 32, 109, 109)
    assert shapes["bn3"] == (None, 16, 107, 107)
    assert shapes["pool3"] == (None, 16, 53, 53)
    assert shapes["flatten"] == (None, 44_944)
    assert shapes["dense"] == (None, 6)
    assert dict((n, p) for n, _, _, p in s["layers"])["dense"] == 269_670


def test_summary_changes_nothing_in_the_model():
    model = build("fashion_cnn").train()
    model.bn2.eval()  # mixed flags must come back as they were
    model(torch.randn(8, 1, 28, 28))  # moving statistics away from their init
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: m.training for n, m in model.named_modules()}
    summary(model)
    format_summary(model)
    assert {n: m.training for n, m in model.named_modules()} == flags
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())


def test_frozen_weights_are_non_trainable():
    model = build("fashion_cnn")
    for name in ("bn1", "bn2", "bn3"):
        getattr(model, name).trainable = False
    s = summary(model, input_shape=None)
    # the no-BN model's weights stay trainable; gamma/beta join the moving statistics
    assert (s["trainable"], s["non_trainable"], s["total"]) == (31_626, 2_304, 33_930)
    model.conv1.weight.requires_grad_(False)
    assert summary(model, input_shape=None)["trainable"] == 31_626 - 800


def test_torch_batchnorm_counts_like_keras():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten())
    s = summary(model, input_shape=(3, 5, 5))
    # running_mean/var are non-trainable weights; num_batches_tracked is not a weight
    assert (s["trainable"], s["non_trainable"]) == (3 * 9 * 8 + 8 + 16, 16)
    assert [(n, t, shape) for n, t, shape, _ in s["layers"]] == [
        ("0", "Conv2d", (None, 8, 3, 3)),
        ("1", "BatchNorm2d", (None, 8, 3, 3)),
        ("2", "ReLU", (None, 8, 3, 3)),
        ("3", "Flatten", (None, 72)),
    ]


def test_without_input_shape_there_are_no_shapes():
    model = nn.Sequential(nn.Linear(4, 3))
    s = summary(model)
    assert s["layers"] == [("0", "Linear", None, 15)] and s["total"] == 15


def test_format_summary_is_a_keras_style_table():
    text = format_summary(build("fashion_cnn"))
    lines = text.splitlines()
    assert lines[0] == 'Model: "fashion_cnn"'
    assert "Total params: 33,930" in lines
    assert "Trainable params: 32,778" in lines
    assert "Non-trainable params: 1,152" in lines
    row = next(line for line in lines if line.startswith("bn3 (BatchNorm)"))
    assert "(None, 512)" in row and row.rstrip().endswith("2,048")
