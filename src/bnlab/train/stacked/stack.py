"""One stack in training: the stacked model, its optimizer, one step, one epoch, the logs."""

from __future__ import annotations

import contextlib

import torch

from bnlab.train.batching import batch_sizes, permutation
from bnlab.train.losses import per_sample_loss, predictions
from bnlab.train.seeding import derive_seed
from bnlab.train.stacked.config import _Config, _Data
from bnlab.train.stacked.graphs import StepGraphs
from bnlab.train.stacked.logs import epoch_logs
from bnlab.train.stacked.model import StackedModel
from bnlab.train.stacked.optimizer import StackedOptimizer
from bnlab.train.stacked.vmap import VmapModel


class _Stack:
    """One stack in training: the stacked model, its optimizer and the per-run bookkeeping."""

    def __init__(self, models, seeds, lrs, cfg: _Config, data: _Data, opt_state=None, t=None):
        self.models, self.seeds, self.lrs, self.cfg, self.data = models, seeds, lrs, cfg, data
        self.k = len(models)
        device = cfg.device
        generators = None
        if cfg.dropout_rng == "per_run":
            generators = [
                torch.Generator(device=device).manual_seed(derive_seed(s, "dropout")) for s in seeds
            ]
        self.dropout_generators = generators
        self.aug_generators = None
        if cfg.augment is not None:
            self.aug_generators = [
                torch.Generator(device=device).manual_seed(derive_seed(s, "augment")) for s in seeds
            ]
        model_class = VmapModel if cfg.kernels == "vmap" else StackedModel
        self.model = model_class(
            models,
            input_shape=tuple(data.x_train.shape[1:]),
            dropout_generators=generators,
            kernels=cfg.kernels,
        ).to(device)
        if cfg.channels_last and model_class is StackedModel:  # vmap's weights are 5-D
            self.model.to(memory_format=torch.channels_last)
        self.opt = StackedOptimizer(cfg.optimizer, self.model, lrs, **cfg.optimizer_options)
        if opt_state is not None:
            self.opt.load_per_run_state(opt_state, t)
        self.sums = torch.zeros(self.k, 3, dtype=torch.float64, device=device)
        self.correct = torch.zeros(self.k, dtype=torch.int64, device=device)
        self.graphs = StepGraphs(self.step, self._mutable, self.k, device, cfg.cuda_graphs)

    # ----------------------------------------------------------------- one step
    def autocast(self):
        if self.cfg.precision != "bf16":
            return contextlib.nullcontext()
        # The autocast weight cache holds casts made inside a captured region, which a
        # replayed graph must not reuse: off when the step may be captured.
        return torch.autocast(
            self.cfg.device.type, dtype=torch.bfloat16, cache_enabled=not self.cfg.cuda_graphs
        )

    def step(self, idx: torch.Tensor) -> None:
        """One training step of every run; ``idx`` is ``(b, K)``: run k's samples in column k."""
        d, k = self.data, self.k
        b = idx.shape[0]
        xb, yb = d.x_train[idx], d.y_train[idx]  # (b, K, ...), (b, K)
        if self.aug_generators is not None:
            xb = torch.stack(
                [self.cfg.augment.apply(xb[:, j], g) for j, g in enumerate(self.aug_generators)],
                dim=1,
            )
        xb = xb.flatten(1, 2)  # (b, K*C, ...) channel-stacked
        if self.cfg.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            logits = self.model(xb)
        flat = logits.float().reshape(b * k, self.model.num_outputs)
        per = per_sample_loss(flat, yb.reshape(-1), self.cfg.loss_epsilon).view(b, k)
        if d.weights is not None:
            per = per * d.weights[yb]
        # Per run, a sum over one contiguous row of b values: the reduction ``fit`` runs on
        # its (b,) vector, whatever K is.
        data_loss = per.t().contiguous().sum(1) / b
        reg = self.model.regularization()
        total = data_loss + reg
        self.opt.zero_grad()
        total.sum().backward()
        self.opt.step()
        with torch.no_grad():
            hits = (predictions(flat.detach()) == yb.reshape(-1)).view(b, k).sum(0)
            # Keras's Mean tracker: batch values weighted by batch size.
            self.sums.add_(torch.stack((total, data_loss, reg), 1).detach().double(), alpha=b)
            self.correct.add_(hits)

    def run_step(self, idx: torch.Tensor) -> None:
        """One training step, replayed from a CUDA graph when ``cuda_graphs`` is on."""
        self.graphs.run(idx)

    def _mutable(self) -> list[torch.Tensor]:
        tensors = [*self.opt.mutable_state(), self.sums, self.correct]
        tensors += list(self.model.buffers())
        return tensors

    # --------------------------------------------------------------- one epoch
    def train_epoch(self, epoch: int) -> None:
        cfg, d = self.cfg, self.data
        n = d.x_train.shape[0]
        self.model.train()
        self.sums.zero_()
        self.correct.zero_()
        perms = torch.stack([permutation(n, s, epoch) for s in self.seeds], 1)  # (n, K)
        if cfg.device.type == "cuda":
            perms = perms.pin_memory()
        perms = perms.to(cfg.device, non_blocking=True)
        start = 0
        for size in batch_sizes(n, cfg.batch_size):
            self.run_step(perms[start : start + size])
            start += size

    def epoch_logs(self) -> list[dict[str, float]]:
        """Read the epoch's training sums and run every evaluation (:mod:`.logs`)."""
        return epoch_logs(self)

    def finish(self) -> None:
        """Write every run's weights and BN statistics back into its model."""
        self.model.unstack_into(self.models)

    def restack(self, keep: list[int]) -> _Stack:
        """A new stack of the runs ``keep`` (positions in this stack), state carried over."""
        self.finish()
        states = self.opt.per_run_state()
        new = _Stack(
            [self.models[i] for i in keep],
            [self.seeds[i] for i in keep],
            [self.lrs[i] for i in keep],
            self.cfg,
            self.data,
            opt_state=[states[i] for i in keep],
            t=self.opt.t,
        )
        if self.dropout_generators is not None:
            for j, i in enumerate(keep):
                new.dropout_generators[j].set_state(self.dropout_generators[i].get_state())
        if self.aug_generators is not None:
            for j, i in enumerate(keep):
                new.aug_generators[j].set_state(self.aug_generators[i].get_state())
        return new
