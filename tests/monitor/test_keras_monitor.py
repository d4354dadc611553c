"""``bnlab.keras.BNMonitor`` on seed 002's own Keras code (Keras 3, torch backend).

The real-data test is the seed's claim the monitor must surface: with pixels scaled to
[0, 1], batch 64 and 1,000 training images (16 steps an epoch), momentum 0.99 leaves the
moving averages mostly at their initial values for the first epochs, so inference-mode
validation accuracy is far below what the weights reach with exact statistics. Fed raw
0-255 pixels, as the seed did, the gap closes within ten epochs.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.keras


def create_model(keras, input_shape=(28, 28, 1), num_classes=10):
    """Seed 002's ``create_model(batch_norm=True)``, written with Keras 3."""
    layers = keras.layers
    model = keras.Sequential()
    model.add(keras.Input(input_shape))
    model.add(layers.Convolution2D(32, kernel_size=5, activation=keras.activations.relu))
    model.add(layers.MaxPooling2D(pool_size=2))
    model.add(layers.BatchNormalization())
    model.add(layers.Convolution2D(32, kernel_size=4, activation=keras.activations.relu,
                                   padding="same"))  # fmt: skip
    model.add(layers.MaxPooling2D(pool_size=2))
    model.add(layers.BatchNormalization())
    model.add(layers.Convolution2D(32, kernel_size=3, activation=keras.activations.relu))
    model.add(layers.Flatten())
    model.add(layers.BatchNormalization())
    model.add(layers.Dropout(rate=0.2))
    model.add(layers.Dense(num_classes))
    model.add(layers.Activation("softmax"))
    return model


def _fashion(shared_data, keras, scale: float, n: int = 1000):
    d = np.load(shared_data / "fashion_mnist.npz")
    x = d["x_train"][: 2 * n].astype("float32")[..., None] / scale
    y = keras.utils.to_categorical(d["y_train"][: 2 * n], 10)
    return x[:n], y[:n], x[n:], y[n:]


def _fit(keras, data, epochs, monitor=None, seed=0, batch_size=64, keras_validation=True):
    """Seed 002's compile and fit; ``keras_validation=False`` skips Keras's own validation
    pass (it does not change training, and the monitor scores its own sample)."""
    x, y, xv, yv = data
    keras.utils.set_random_seed(seed)
    model = create_model(keras, x.shape[1:])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x, y, validation_data=(xv, yv) if keras_validation else None,
                        batch_size=batch_size, epochs=epochs, verbose=0,
                        callbacks=[monitor] if monitor else [])  # fmt: skip
    return model, history


@pytest.mark.slow
def test_seed002_stale_warning_with_unit_pixels_and_none_late_with_raw(keras, shared_data):
    import bnlab.keras

    unit = _fashion(shared_data, keras, 255.0)
    lines: list[str] = []
    monitor = bnlab.keras.BNMonitor(validation_data=unit[2:], warn=lines.append)
    _, history = _fit(keras, unit, 3, monitor)
    assert monitor.watcher.first_epoch["stale-running-stats"] in {f"epoch {e}" for e in range(1, 6)}
    epoch2 = history.history
    assert epoch2["val_accuracy_exact_bn"][1] - epoch2["val_accuracy_moving_bn"][1] >= 0.3
    stale = [line for line in lines if "the moving averages are stale" in line]
    assert stale and "momentum 0.99" in stale[0] and "bnlab.recalibrate" in stale[0]
    # the monitor's own moving-average score agrees with Keras's val_accuracy on all 1,000
    assert abs(epoch2["val_accuracy_moving_bn"][1] - epoch2["val_accuracy"][1]) < 0.12

    raw = _fashion(shared_data, keras, 1.0)
    monitor = bnlab.keras.BNMonitor(validation_data=raw[2:], warn=lambda line: None)
    _fit(keras, raw, 11, monitor, keras_validation=False)
    late = monitor.history.query("epoch > 10")
    assert len(late) == 1 and not late["findings"].str.contains("stale-running-stats").any()


def test_keras_monitor_never_changes_training(keras):
    """Same seed, same data: every weight after 2 epochs within 1e-6 with and without it."""
    import bnlab.keras

    rng = np.random.default_rng(0)
    x = rng.normal(size=(192, 28, 28, 1)).astype("float32")
    labels = (x.mean(axis=(1, 2, 3)) > 0).astype("int64") + 2 * (x[:, :14].mean(axis=(1, 2, 3)) > 0)
    y = keras.utils.to_categorical(labels, 10)
    data = (x[:128], y[:128], x[128:], y[128:])
    plain, _ = _fit(keras, data, 2, batch_size=32)
    monitor = bnlab.keras.BNMonitor(validation_data=data[2:], warn=lambda line: None)
    watched, history = _fit(keras, data, 2, monitor, batch_size=32)
    for a, b in zip(plain.weights, watched.weights, strict=True):
        np.testing.assert_allclose(np.asarray(a.numpy()), np.asarray(b.numpy()), atol=1e-6,
                                   rtol=0, err_msg=a.path)  # fmt: skip
    assert "train_step" not in watched.__dict__  # fit's end unwrapped it
    assert len(monitor.history) == 2 and "val_accuracy_exact_bn" in history.history


def test_recalibrate_at_end_leaves_exact_statistics_and_says_so(keras):
    import bnlab
    import bnlab.keras

    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(160, 28, 28, 1)).astype("float32")
    y = keras.utils.to_categorical((x.mean(axis=(1, 2, 3)) > 2.0).astype("int64"), 10)
    lines: list[str] = []
    monitor = bnlab.keras.BNMonitor(validation_data=(x[128:], y[128:]), train_data=(x[:128], y[:128]),
                                    recalibrate_at_end=True, warn=lines.append)  # fmt: skip
    model, _ = _fit(keras, (x[:128], y[:128], x[128:], y[128:]), 1, monitor, batch_size=32)
    assert lines[-1] == "recalibrated the BN statistics on 128 training samples (exact statistics)"
    expected = bnlab.recalibrate(model, (x[:128], y[:128]), batch_size=512)
    for got, want in zip(model.non_trainable_weights, expected.non_trainable_weights, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_custom_loop_without_training_true_is_named(keras):
    """A custom loop that calls ``model(x)`` (training defaults to False): BN never updates."""
    import torch

    import bnlab.keras

    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 2.0, size=(96, 28, 28, 1)).astype("float32")
    y = keras.utils.to_categorical((x.mean(axis=(1, 2, 3)) > 1.0).astype("int64"), 10)
    keras.utils.set_random_seed(0)
    model = create_model(keras)
    model.compile(loss="categorical_crossentropy", optimizer="adam")
    lines: list[str] = []
    monitor = bnlab.keras.BNMonitor(validation_data=(x[64:], y[64:]), train_data=(x[:64], y[:64]),
                                    warn=lines.append)  # fmt: skip
    monitor.set_model(model)
    monitor.on_train_begin()
    loss_fn = keras.losses.CategoricalCrossentropy()
    for epoch in range(2):
        monitor.on_epoch_begin(epoch)
        for i in range(0, 64, 32):
            xb, yb = torch.as_tensor(x[i : i + 32]), torch.as_tensor(y[i : i + 32])
            model.zero_grad()
            loss = loss_fn(yb, model(xb))  # the bug: no training=True
            loss.backward()
            grads = [v.value.grad for v in model.trainable_weights]
            with torch.no_grad():
                model.optimizer.apply(grads, model.trainable_weights)
        monitor.on_epoch_end(epoch, {})
    monitor.on_train_end()
    assert monitor.watcher.first_epoch["stats-never-updated"] == "epoch 1"
    assert lines[0].startswith("epoch 1: BN statistics not updating in batch_normalization")
    assert "without training mode" in lines[0] and "training=True" in lines[0]
    assert monitor.history["bn_unchanged_layers"].tolist() == [3.0, 3.0]
