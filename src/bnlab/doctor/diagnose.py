"""``diagnose``: examine a trained model on data, name its BN problems, prove the main one.

Budget: at most two passes over the diagnosed data. Pass 1 runs every batch twice, BN on
batch statistics (train mode, dropout off, each BN layer's input captured) and BN on its
moving averages (inference mode); from it come both accuracies and the exact population
statistics. Only when inference mode loses at least
:data:`~bnlab.doctor.checks.behaviour.GAP_THRESHOLD` does pass 2 evaluate a copy carrying
those population statistics (the intervention), plus the test split before/after when the
data is a bnlab Dataset. The user's model is never touched: every forward runs on a copy,
flags and statistics are restored in ``finally``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bnlab._validation import check_number, check_positive_int
from bnlab.doctor.adapters import ModelAdapter, adapt
from bnlab.doctor.capture import Capture
from bnlab.doctor.checks import run_checks
from bnlab.doctor.checks.batch import measure_batch_dependence
from bnlab.doctor.checks.behaviour import needs_intervention
from bnlab.doctor.checks.data import measure_mismatch
from bnlab.doctor.compare import bn_drift, ema_staleness
from bnlab.doctor.diagnosis import Diagnosis
from bnlab.doctor.evaluation import evaluate, mode_result
from bnlab.doctor.exam import Exam
from bnlab.doctor.metrics import Agreement, LossFn, Meter, resolve_loss
from bnlab.doctor.moments import PooledMoments
from bnlab.doctor.optimizers import weight_decay_by_layer
from bnlab.doctor.progress import track
from bnlab.doctor.recalibrate import recalibration_targets
from bnlab.doctor.sources import DataSource, as_sources
from bnlab.errors import DataError


def _input_moments(x: torch.Tensor, moments: PooledMoments) -> tuple[float, float]:
    # Tabular data per feature; images pooled over every value (layout-independent).
    if x.dim() == 2:
        moments.update(x, channel_axis=1)
    else:
        moments.update(x.reshape(1, -1), channel_axis=0)
    return float(x.min()), float(x.max())


def _total(source: DataSource, max_batches: int | None) -> int | None:
    """Samples one pass will read, when known (for the progress display)."""
    return source.num_samples if max_batches is None else None


def _first_pass(
    work: ModelAdapter, source: DataSource, exam: Exam, loss_fn: LossFn, max_batches: int | None
) -> None:
    has_bn = bool(exam.bn)
    train_meter, inf_meter, agree = Meter(loss_fn), Meter(loss_fn), Agreement()
    capture = Capture()
    inputs = PooledMoments()
    lo, hi = np.inf, -np.inf
    batches = track(
        source.batches(max_batches),
        _total(source, max_batches),
        "pass 1 (train and inference mode)",
    )
    for i, (x, y) in enumerate(batches):
        if i == 0 and has_bn:
            exam.batch_dependence = measure_batch_dependence(work, x, source.layout)
        b_lo, b_hi = _input_moments(x, inputs)
        lo, hi = min(lo, b_lo), max(hi, b_hi)
        xin = work.prepare(x, source.layout)
        inference = work.forward(xin, train=False)
        inf_meter.add(inference, y)
        exam.classes = (
            2 if inference.dim() == 1 or inference.shape[-1] == 1 else inference.shape[-1]
        )
        if has_bn:
            train = work.forward(xin, train=True, capture=capture)
            train_meter.add(train, y)
            agree.add(train, inference)
    if not inf_meter.n:
        raise DataError(f"data: the {source.name} yielded no batches")
    exam.inference = mode_result(inf_meter)
    if has_bn:
        exam.train_mode = mode_result(train_meter)
        exam.agreement = agree.value
        exam.population = {path: (*m.numpy(), m.count) for path, m in capture.items()}
        exam.batchwise = capture.batch_averages()
    mean, var = inputs.numpy()
    exam.input_mean, exam.input_std = mean, np.sqrt(var)
    exam.input_min, exam.input_max = float(lo), float(hi)


def _recalibrated_pass(
    work: ModelAdapter, source: DataSource, exam: Exam, loss_fn: LossFn, max_batches: int | None
) -> None:
    meter, agree = Meter(loss_fn), Agreement()
    total = _total(source, max_batches)
    for x, y in track(source.batches(max_batches), total, "pass 2 (exact statistics)"):
        xin = work.prepare(x, source.layout)
        out = work.forward(xin, train=False)
        meter.add(out, y)
        if y is None:  # unlabelled: train mode is the reference the gap was measured against
            agree.add(work.forward(xin, train=True), out)
    exam.recalibrated = mode_result(meter)
    exam.recalibrated_agreement = agree.value


def _model_info(adapter: ModelAdapter, exam: Exam, batch_size: int) -> dict:
    info = {
        "framework": adapter.framework,
        "model": type(adapter.model).__name__,
        "bn_layers": len(exam.bn),
        "layers": [
            {
                "path": b.path,
                "kind": b.kind,
                "momentum_keras_convention": b.momentum,
                "epsilon": b.epsilon,
                "steps": exam.steps_for(b)[0],
                "num_features": b.num_features,
            }
            for b in exam.bn
        ],
        "graph": exam.graph.source,
        "unwrapped": list(adapter.wrappers),
        "batch_size": batch_size,
        "samples": exam.inference.samples,
        "labelled": exam.labelled,
        "inference_accuracy": exam.inference.accuracy,
        "inference_loss": exam.inference.loss,
    }
    if exam.train_mode is not None:
        info.update(
            train_mode_accuracy=exam.train_mode.accuracy,
            train_mode_loss=exam.train_mode.loss,
            agreement=exam.agreement,
        )
    if exam.recalibrated is not None:
        info["recalibrated_accuracy"] = exam.recalibrated.accuracy
    if exam.test_before is not None:
        info["test_accuracy_before"] = exam.test_before.accuracy
        info["test_accuracy_after"] = exam.test_after.accuracy
    return info


def diagnose(
    model,
    data,
    *,
    batch_size: int = 256,
    max_batches: int | None = None,
    loss=None,
    steps: int | None = None,
    train_batch_size: int | None = None,
    optimizer=None,
    reference=None,
    averaged=None,
) -> Diagnosis:
    """Examine ``model`` on ``data`` and report every BN problem found, with evidence.

    Parameters
    ----------
    model:
        A trained ``torch.nn.Module`` (``torch.nn.BatchNorm*d`` / ``bnlab.BatchNorm``; forward
        returns logits) or a Keras 3 model (torch backend; softmax/sigmoid outputs are
        read back as logits). It is not modified: state and train/eval flags are the same
        afterwards.
    data:
        A bnlab Dataset (its training split is diagnosed, its test split gives before/after
        numbers), an ``(x, y)`` pair of tensors or arrays (or ``x`` alone), a torch Dataset or
        DataLoader, or a name/path :func:`bnlab.data.load` understands. Use the data the model
        was trained on, at the scale it was trained with.
    batch_size:
        Samples per forward pass for tensor data (a DataLoader keeps its own); train-mode
        accuracy is measured with batches of this size.
    max_batches:
        Read at most this many batches per pass (``None``: all).
    loss:
        ``None``/``"auto"`` (cross-entropy chosen from the logits' shape),
        ``"cross_entropy"``, ``"binary_cross_entropy"`` or a callable ``(logits, y) -> mean
        loss``; used for the losses in the evidence and for L2's share of the loss.
    steps:
        Training steps the model has seen, when the model does not record them (PyTorch BN
        counts ``num_batches_tracked``; a compiled Keras model has optimizer iterations).
    train_batch_size:
        The batch size the model was trained with (enables the ``small-batch`` check).
    optimizer:
        The torch or Keras optimizer the model was trained with: its weight decay on layers
        that feed BN is reported as ``l2-with-bn``.
    reference:
        The pretrained model (same architecture) or state_dict a fine-tuning started from:
        BN statistics that moved while gamma/beta stayed are ``frozen-bn-drift``.
    averaged:
        An EMA/SWA copy of the model (a ``torch.optim.swa_utils.AveragedModel`` given as
        ``model`` counts as one): BN statistics that do not fit its weights are ``ema-stale-bn``.

    Returns
    -------
    Diagnosis
        ``findings`` (see :data:`bnlab.doctor.checks.CHECKS` for the ids), ``model_info``
        and ``passes`` (passes over the diagnosed data: 1, or 2 when a gap was tested).
    """
    batch_size = check_positive_int("batch_size", batch_size)
    if max_batches is not None:
        max_batches = check_positive_int("max_batches", max_batches)
    if steps is not None:
        steps = check_number("steps", steps, low=0, integer=True)
    if train_batch_size is not None:
        train_batch_size = check_positive_int("train_batch_size", train_batch_size)
    loss_fn = resolve_loss(loss)
    start = time.perf_counter()

    adapter = adapt(model)
    if averaged is None and "AveragedModel" in adapter.wrappers:
        averaged = adapter.model
    train_src, test_src = as_sources(data, batch_size)
    # Pure reads of the user's model; everything that runs it happens on `work`.
    exam = Exam(
        framework=adapter.framework,
        bn=adapter.bn_layers(),
        graph=None,  # filled from the copy below (tracing runs code)
        gammas=adapter.gammas(),
        regularization_loss=adapter.regularization_loss(),
        steps=steps,
        optimizer_steps=adapter.optimizer_steps(),
        train_batch_size=train_batch_size,
    )
    exam.weight_decay = weight_decay_by_layer(adapter, optimizer)
    if reference is not None:
        exam.drift = bn_drift(adapter, reference)
    work = adapter.copy()
    exam.graph = work.graph()
    exam.running = work.running_stats()

    _first_pass(work, train_src, exam, loss_fn, max_batches)
    exam.mismatch = measure_mismatch(exam)
    if needs_intervention(exam):
        if test_src is not None:
            exam.test_before = evaluate(work, test_src, loss_fn, max_batches)
        targets = recalibration_targets(work)
        work.set_running_stats({p: s for p, s in exam.population.items() if p in targets})
        _recalibrated_pass(work, train_src, exam, loss_fn, max_batches)
        if test_src is not None:
            exam.test_after = evaluate(work, test_src, loss_fn, max_batches)

    if averaged is not None and not exam.mismatch:
        exam.ema = ema_staleness(averaged, train_src, max_batches)
    info = _model_info(adapter, exam, batch_size)
    info["test_passes"] = test_src.passes if test_src is not None else 0
    info["seconds"] = round(time.perf_counter() - start, 3)
    return Diagnosis(findings=run_checks(exam), model_info=info, passes=train_src.passes)
