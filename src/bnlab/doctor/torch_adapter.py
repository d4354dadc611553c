"""The doctor's adapter for PyTorch modules (``torch.nn.BatchNorm*d`` and ``bnlab.BatchNorm``).

Momentum conventions: PyTorch's ``momentum`` is the weight of the *new* batch
(``running = (1 - m) * running + m * batch``), bnlab's and Keras's is the fraction *kept*;
:class:`~bnlab.doctor.model_view.BNLayer` reports Keras's (``1 - m`` for PyTorch layers).
PyTorch stores the unbiased running variance, bnlab the biased one unless
``variance="unbiased"``.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn.parameter import is_lazy

from bnlab.doctor.capture import record
from bnlab.doctor.model_view import BNLayer, Graph, ModelAdapter
from bnlab.doctor.torch_graph import is_bn, module_graph
from bnlab.errors import ConfigError, DataError
from bnlab.nn.batchnorm import BatchNorm


def _ready(t) -> bool:
    """A materialised tensor (lazy layers that never ran hold uninitialised ones)."""
    return t is not None and not is_lazy(t)


def _stat_buffers(m: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    mean, var = (
        (m.moving_mean, m.moving_variance)
        if isinstance(m, BatchNorm)
        else (m.running_mean, m.running_var)
    )
    return (mean, var) if _ready(mean) and _ready(var) else (None, None)


def _channel_axis(m: nn.Module, x: torch.Tensor) -> int:
    return m.axis % x.dim() if isinstance(m, BatchNorm) else 1


class TorchAdapter(ModelAdapter):
    """Reads and runs a ``torch.nn.Module``; see :mod:`bnlab.doctor.model_view`."""

    framework = "torch"

    def __init__(self, model: nn.Module):
        self.model = model
        self._bns = [(path, m) for path, m in model.named_modules() if is_bn(m)]

    # ----------------------------------------------------------------- static
    def bn_layers(self) -> list[BNLayer]:
        layers = []
        for path, m in self._bns:
            params = [
                p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None
            ]
            if isinstance(m, BatchNorm):
                params = [p for p in (m.gamma, m.beta) if p is not None]
                native = m.momentum
                layers.append(
                    BNLayer(
                        path=path,
                        kind="bnlab.BatchNorm",
                        num_features=int(m.num_features or 0),
                        momentum=native,
                        native_momentum=native,
                        epsilon=float(m.epsilon),
                        steps=int(m.num_batches_tracked) if _ready(m.num_batches_tracked) else None,
                        variance=m.variance,
                        has_params=bool(params),
                        params_frozen=bool(params) and not any(p.requires_grad for p in params),
                        # Keras semantics: trainable=False means inference mode in training too.
                        uses_batch_stats_in_training=bool(m.trainable),
                        in_train_mode=m.training,
                        virtual_batch_size=m.virtual_batch_size,
                    )
                )
                continue
            native = m.momentum
            tracked = m.num_batches_tracked
            layers.append(
                BNLayer(
                    path=path,
                    kind=f"torch.nn.{type(m).__name__}",
                    num_features=int(m.num_features),
                    momentum=None if native is None else 1.0 - float(native),
                    native_momentum=None if native is None else float(native),
                    epsilon=float(m.eps),
                    steps=None if tracked is None else int(tracked),
                    variance="unbiased",
                    has_params=bool(params),
                    params_frozen=bool(params) and not any(p.requires_grad for p in params),
                    uses_batch_stats_in_training=True,
                    in_train_mode=m.training,
                    tracks_running_stats=bool(m.track_running_stats),
                )
            )
        return layers

    def graph(self) -> Graph:
        return module_graph(self.model)

    def copy(self) -> TorchAdapter:
        return TorchAdapter(copy.deepcopy(self.model))

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        p = next(self.model.parameters(), None)
        if p is None:
            p = next(self.model.buffers(), None)
        if p is None:
            return torch.device("cpu"), torch.float32
        return p.device, (p.dtype if p.is_floating_point() else torch.float32)

    def prepare(self, x: torch.Tensor, layout: str) -> torch.Tensor:
        meta = getattr(self.model, "bnlab_meta", None) or {}
        expected = meta.get("input_shape")
        if expected is not None and tuple(x.shape[1:]) != tuple(expected):
            raise DataError(
                f"data: samples of shape {tuple(x.shape[1:])} do not fit the model, "
                f"which takes {tuple(expected)} (channels first)"
            )
        device, dtype = self._device_dtype()
        return x.to(device=device, dtype=dtype)

    # ---------------------------------------------------------------- running
    @contextmanager
    def _mode(self, train: bool):
        flags = {m: m.training for m in self.model.modules()}
        saved = []
        if train:  # a training-mode forward updates the running stats: put them back after
            saved = [(b, b.clone()) for _, m in self._bns for b in m.buffers() if _ready(b)]
        try:
            self.model.eval()
            if train:
                for _, m in self._bns:
                    m.train()
            yield
        finally:
            with torch.no_grad():
                for buf, value in saved:
                    buf.copy_(value)
            for m, flag in flags.items():
                m.training = flag

    def forward(self, x, *, train: bool, capture: dict | None = None) -> torch.Tensor:
        hooks = []
        if capture is not None:
            for path, m in self._bns:

                def hook(module, args, path=path):
                    inp = args[0]
                    record(capture, path, inp, _channel_axis(module, inp))

                hooks.append(m.register_forward_pre_hook(hook))
        try:
            with self._mode(train), torch.no_grad():
                out = self.model(x)
        except (ConfigError, DataError):
            raise
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"data: inputs of shape {tuple(x.shape[1:])} do not fit the model ({first})"
            ) from exc
        finally:
            for h in hooks:
                h.remove()
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ConfigError(
                f"model: forward returned a {type(out).__name__}; the doctor needs a logits tensor"
            )
        return out.detach().float()

    def running_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        stats = {}
        for path, m in self._bns:
            mean, var = _stat_buffers(m)
            if mean is not None and var is not None:
                stats[path] = (
                    mean.detach().double().cpu().numpy(),
                    var.detach().double().cpu().numpy(),
                )
        return stats

    @torch.no_grad()
    def set_running_stats(self, stats) -> None:
        unbiased = {layer.path for layer in self.bn_layers() if layer.variance == "unbiased"}
        for path, m in self._bns:
            if path not in stats:
                continue
            mean, var, count = stats[path]
            if path in unbiased and count > 1:
                var = var * (count / (count - 1))
            rm, rv = _stat_buffers(m)
            if rm is None:
                continue
            rm.copy_(torch.as_tensor(mean, dtype=rm.dtype, device=rm.device))
            rv.copy_(torch.as_tensor(var, dtype=rv.dtype, device=rv.device))

    def gammas(self) -> dict[str, np.ndarray]:
        out = {}
        for path, m in self._bns:
            g = m.gamma if isinstance(m, BatchNorm) else m.weight
            if _ready(g):
                out[path] = g.detach().double().cpu().numpy()
        return out

    @torch.no_grad()
    def regularization_loss(self) -> float | None:
        total, found = 0.0, False
        for m in self.model.modules():
            fn = getattr(m, "regularization_loss", None)
            if fn is None:
                continue
            value = fn()
            if value is not None:
                total += float(value)
                found = True
        return total if found else None

    def optimizer_steps(self) -> int | None:
        return None  # a torch module does not carry its optimizer

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().cpu().numpy().copy() for k, v in self.model.state_dict().items()}

    def save(self, path: str) -> None:
        torch.save(self.model.state_dict(), path)
