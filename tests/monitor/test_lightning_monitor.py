"""``bnlab.lightning.BNMonitor``: the same keys through Lightning's logger (skips without it)."""

from __future__ import annotations

import pytest
import torch
from monitor_helpers import mlp

pl = pytest.importorskip("lightning.pytorch", reason="the lightning extra is not installed")


class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = mlp(momentum=0.001)  # torch convention: Keras 0.999, stale after 3 epochs

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        pass

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


class Recorder(pl.loggers.Logger):
    """Keeps every logged metric (what CSVLogger / TensorBoardLogger would write)."""

    def __init__(self):
        super().__init__()
        self.metrics: list[dict] = []

    @property
    def name(self):
        return "recorder"

    @property
    def version(self):
        return 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append(dict(metrics))


def test_lightning_callback_logs_the_monitor_keys(digits, tmp_path):
    import bnlab.lightning

    x, y, xv, yv = digits
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64,
                                        shuffle=True)  # fmt: skip
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=250)
    lines: list[str] = []
    monitor = bnlab.lightning.BNMonitor(warn=lines.append)
    logger = Recorder()
    trainer = pl.Trainer(
        max_epochs=3, callbacks=[monitor], logger=logger, default_root_dir=tmp_path,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        accelerator="cpu", devices=1, log_every_n_steps=1,
    )  # fmt: skip
    trainer.fit(Tiny(), train, val)
    logged = [m for m in logger.metrics if "val_accuracy_exact_bn" in m]
    assert len(logged) == 3
    keys = {"val_accuracy_moving_bn", "val_accuracy_exact_bn", "val_loss_moving_bn",
            "val_loss_exact_bn", "bn_stale_weight", "bn_mean_error_std", "bn_nonfinite",
            "bn_unchanged_layers"}  # fmt: skip
    assert keys <= set(logged[0])
    hist = monitor.history
    for row, m in zip(hist.to_dict("records"), logged, strict=True):
        assert m["bn_stale_weight"] == pytest.approx(row["bn_stale_weight"])
        assert m["val_accuracy_exact_bn"] == pytest.approx(row["val_accuracy_exact_bn"])
    # 21 steps per epoch: the layer's initial values still weigh 0.999 ** (21 * epoch)
    assert hist["bn_stale_weight"].tolist() == pytest.approx([0.999 ** (21 * e) for e in (1, 2, 3)])
    assert lines[0].startswith("epoch 1: ")
    assert "the moving averages are stale (momentum 0.999, 21 steps: 98 % initial values)" in lines[0]
    assert {"momentum-too-high-for-steps", "stale-running-stats"} <= set(monitor.findings)
