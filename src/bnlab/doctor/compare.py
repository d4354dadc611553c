"""Compare a model's BN layers with another copy: a pretrained reference, an averaged model.

* ``reference`` (fine-tuning): the checkpoint the model started from, as a model of the same
  architecture or a PyTorch state_dict. A BN layer whose gamma/beta did not move (or are
  frozen) but whose moving statistics did was meant to be frozen and was not: ``frozen-bn-drift``.
* ``averaged`` (EMA / SWA, e.g. ``torch.optim.swa_utils.AveragedModel``): averaging the weights
  does not average the BN statistics into ones that fit the averaged weights; unless they are
  recomputed (``torch.optim.swa_utils.update_bn``, ``bnlab.recalibrate``) they are stale:
  ``ema-stale-bn``, measured as the distance of the averaged model's moving statistics from
  its own population statistics on the data.

Units: mean shifts in standard deviations of the reference (or population), variance as a
ratio; thresholds in :mod:`bnlab.doctor.thresholds`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bnlab.doctor.adapters import adapt
from bnlab.doctor.capture import Capture
from bnlab.doctor.sources import DataSource
from bnlab.doctor.thresholds import DRIFT_STD, DRIFT_VAR_RATIO, MEAN_ERROR, VAR_RATIO

EMA_BATCHES = 8  # batches read to measure the averaged model's population statistics


def _reference_stats(reference: Any, paths: list[str]) -> tuple[dict, dict]:
    """``({path: (mean, var)}, {path: (gamma, beta) or None})`` of the reference."""
    if isinstance(reference, dict):  # a PyTorch state_dict
        stats, params = {}, {}
        for p in paths:
            mean = reference.get(f"{p}.running_mean", reference.get(f"{p}.moving_mean"))
            var = reference.get(f"{p}.running_var", reference.get(f"{p}.moving_variance"))
            if mean is None or var is None:
                continue
            stats[p] = (_np(mean), _np(var))
            g = reference.get(f"{p}.weight", reference.get(f"{p}.gamma"))
            b = reference.get(f"{p}.bias", reference.get(f"{p}.beta"))
            params[p] = None if g is None else (_np(g), None if b is None else _np(b))
        return stats, params
    ref = adapt(reference)
    return ref.running_stats(), {p: (g, None) for p, g in ref.gammas().items()}


def _np(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        return t.detach().double().cpu().numpy()
    return np.asarray(t, dtype=np.float64)


def _moved(mean, var, ref_mean, ref_var, eps: float) -> tuple[float, float]:
    shift = float(np.sqrt(np.mean(((mean - ref_mean) / np.sqrt(ref_var + eps)) ** 2)))
    ratio = float(np.median((var + eps) / (ref_var + eps)))
    return shift, ratio


def bn_drift(adapter, reference: Any) -> dict[str, dict]:
    """``{path: numbers}`` for BN layers meant frozen (affine unchanged or frozen) whose stats moved."""
    layers = adapter.bn_layers()
    ref_stats, ref_params = _reference_stats(reference, [b.path for b in layers])
    running, gammas = adapter.running_stats(), adapter.gammas()
    out = {}
    for layer in layers:
        if layer.path not in running or layer.path not in ref_stats:
            continue
        mean, var = running[layer.path]
        ref_mean, ref_var = ref_stats[layer.path]
        if mean.shape != ref_mean.shape:
            continue
        shift, ratio = _moved(mean, var, ref_mean, ref_var, layer.epsilon)
        if shift <= DRIFT_STD and 1 / DRIFT_VAR_RATIO <= ratio <= DRIFT_VAR_RATIO:
            continue
        ref_gamma = (ref_params.get(layer.path) or (None, None))[0]
        gamma = gammas.get(layer.path)
        affine_kept = (
            gamma is not None and ref_gamma is not None and np.allclose(gamma, ref_gamma, atol=1e-7)
        )
        if not (layer.params_frozen or affine_kept or not layer.has_params):
            continue  # gamma/beta were fine-tuned too: the statistics were meant to move
        out[layer.path] = {
            "mean_shift_ref_std": shift,
            "variance_ratio_median": ratio,
            "params_frozen": layer.params_frozen,
            "affine_unchanged": affine_kept,
        }
    return out


def ema_staleness(averaged: Any, source: DataSource, max_batches: int | None) -> dict[str, dict]:
    """``{path: numbers}`` for BN layers of ``averaged`` whose moving statistics do not fit it."""
    work = adapt(averaged).copy()
    limit = EMA_BATCHES if max_batches is None else min(max_batches, EMA_BATCHES)
    capture = Capture()
    for x, _ in source.batches(limit):
        work.forward(work.prepare(x, source.layout), train=True, capture=capture)
    running = work.running_stats()
    out = {}
    for layer in work.bn_layers():
        if layer.path not in running or layer.path not in capture:
            continue
        pm, pv = capture[layer.path].numpy()
        rm, rv = running[layer.path]
        shift, ratio = _moved(rm, rv, pm, pv, layer.epsilon)
        if shift > MEAN_ERROR or not 1 / VAR_RATIO <= ratio <= VAR_RATIO:
            out[layer.path] = {"mean_error_std": shift, "variance_ratio_median": ratio}
    return out
