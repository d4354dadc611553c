"""Check the patient first: data at another scale than in training is a ``data-mismatch``.

A model trained on 0-1 pixels and diagnosed with raw 0-255 ones loses accuracy in inference
mode while train mode (BN on batch statistics) hides the scale: the doctor must not confirm
stale statistics, must name the mismatch with its ~255x factor, and ``fix`` must refuse to
recalibrate (which would write a model that fails on the real inputs). At the right scale
the same model is healthy. The week-9 model, trained *and* diagnosed on raw pixels, still
gets its stale statistics confirmed (tests/doctor/test_week9.py).
"""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from bnlab.cli.doctor_cmd import app
from bnlab.doctor import diagnose
from bnlab.doctor.recalibrate import repair
from bnlab.errors import DataError

NETS = textwrap.dedent(
    """
    from torch import nn

    def week9():
        return nn.Sequential(
            nn.Conv2d(1, 16, 3), nn.ReLU(), nn.BatchNorm2d(16, momentum=0.2), nn.MaxPool2d(2),
            nn.Conv2d(16, 16, 2), nn.ReLU(), nn.BatchNorm2d(16, momentum=0.2),
            nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
        )
    """
)


@pytest.fixture(scope="module")
def unit_model(tmp_path_factory, cases):
    """Seed 001's layout (Keras momentum 0.8) trained 3 epochs on digits scaled to 0-1."""
    namespace: dict = {}
    exec(NETS, namespace)
    torch.manual_seed(0)
    x, y = cases.data.digits("unit", "nchw")
    model = cases.train.train_torch(namespace["week9"](), x, y, epochs=3, batch_size=128)
    folder = tmp_path_factory.mktemp("unit_model")
    (folder / "nets.py").write_text(NETS)
    torch.save(model.state_dict(), folder / "net.pt")
    return model, folder


def _mismatch_checks(diag):
    (mismatch,) = diag.get("data-mismatch")
    assert mismatch.severity == "error" and "scale=unit" in mismatch.fix
    factor = mismatch.evidence["layers"]["2"]["scale_factor"]
    assert 150 <= factor <= 1000  # 255x at the input, through a conv with bias and a ReLU
    assert "0-255 given to a model trained on 0-1" in mismatch.message
    assert not diag.get("stale-running-stats") and not diag.get("train-eval-gap")
    assert diag.passes == 1  # no intervention on mismatched data
    return factor


def test_raw_pixels_for_a_unit_model_are_a_data_mismatch_not_stale_stats(unit_model, cases):
    model, _ = unit_model
    raw = cases.data.digits("raw", "nchw")
    diag = diagnose(model, raw)
    _mismatch_checks(diag)
    # the symptom that used to be read as stale statistics is there
    assert diag.model_info["train_mode_accuracy"] - diag.model_info["inference_accuracy"] > 0.3

    with pytest.raises(DataError, match=r"refusing to recalibrate.*--force"):
        repair(model, raw)
    forced = repair(model, raw, force=True)
    assert "not the data the model was trained on" in forced.warning

    unit = cases.data.digits("unit", "nchw")
    healthy = diagnose(model, unit)
    assert healthy.healthy, str(healthy)
    assert repair(model, unit).warning is None


def test_the_data_check_reads_the_data_against_training_not_against_staleness(cases):
    # week 9: raw pixels in training and in diagnosis, 42 steps at Keras momentum 0.99
    x, y = cases.data.digits("raw", "nchw")
    diag = diagnose(cases.torch_cases.week9(0.99), (x, y))
    assert "data-mismatch" not in diag.ids and diag.get("stale-running-stats")[0].confirmed
    # the same stale model fed 0-1 pixels: 1/255 of its training scale
    small = diagnose(cases.torch_cases.week9(0.99), (x / 255.0, y))
    (mismatch,) = small.get("data-mismatch")
    assert mismatch.evidence["layers"]["2"]["scale_factor"] < 1 / 8
    assert "scale=raw" in mismatch.fix
    assert "stale-running-stats" not in small.ids


def test_keras_unit_model_on_raw_pixels(cases, keras):
    layers = keras.layers
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), layers.Conv2D(8, 3, activation="relu"),
        layers.BatchNormalization(momentum=0.8), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    unit = cases.data.digits("unit", "nchw")
    cases.train.train_keras(model, cases.data.nhwc(unit[0]), unit[1].numpy(), epochs=2,
                            batch_size=64, lr=1e-2)  # fmt: skip
    raw = cases.data.digits("raw", "nchw")
    diag = diagnose(model, raw)
    (mismatch,) = diag.get("data-mismatch")
    factor = next(iter(mismatch.evidence["layers"].values()))["scale_factor"]
    assert 150 <= factor <= 1000
    assert "stale-running-stats" not in diag.ids
    assert diagnose(model, unit).healthy
    with pytest.raises(DataError, match="refusing to recalibrate"):
        repair(model, raw)


def test_fix_refuses_mismatched_data_unless_forced(unit_model):
    _, folder = unit_model
    runner = CliRunner()
    args = [f"{folder / 'nets.py'}:week9", "--weights", str(folder / "net.pt"), "--data", "digits"]
    out = folder / "fixed.pt"
    result = runner.invoke(app, ["fix", *args, "-O", "scale=raw", "-o", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert "refusing to recalibrate" in result.stderr and "Traceback" not in result.output
    result = runner.invoke(app, ["doctor", *args, "-O", "scale=raw", "--json"])
    assert result.exit_code == 1
    assert "data-mismatch" in {f["id"] for f in json.loads(result.stdout)["findings"]}
    result = runner.invoke(app, ["fix", *args, "-O", "scale=raw", "-o", str(out), "--force"])
    assert result.exit_code == 0 and out.is_file()
    assert "warning:" in result.stdout and "--force" in result.stdout
    result = runner.invoke(app, ["doctor", *args, "-O", "scale=unit", "--json"])
    assert result.exit_code == 0, result.output


def test_a_recalibrated_stale_model_on_its_own_data_is_not_a_mismatch(cases):
    # stale statistics (Keras momentum 0.99, 28 steps) on 0-1 pixels, then recalibrated: the
    # moving variance now sits below momentum ** steps, which no moving average from 0/1
    # could produce; the stored statistics fit the data, so there is no mismatch.
    import bnlab

    torch.manual_seed(0)
    x, y = cases.data.digits("unit", "nchw")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.BatchNorm2d(8, momentum=0.01),
        torch.nn.Flatten(), torch.nn.Linear(8 * 6 * 6, 10),
    )  # fmt: skip
    net = cases.train.train_torch(net, x, y, epochs=1, batch_size=64, lr=1e-2)
    w = 0.99 ** int(net[2].num_batches_tracked)
    fixed = bnlab.recalibrate(net, (x, y))
    assert float(fixed[2].running_var.median()) < w  # the case the correction alone misreads
    diag = diagnose(fixed, (x, y))
    assert "data-mismatch" not in diag.ids
    assert "data-mismatch" in diagnose(fixed, (x * 255, y)).ids
