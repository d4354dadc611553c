"""Checks on BN settings: momentum convention, batch size, frozen layers in train mode."""

from __future__ import annotations

from bnlab.doctor.exam import Exam
from bnlab.doctor.findings import Finding, layer_summary
from bnlab.doctor.thresholds import SMALL_BATCH, TORCH_MOMENTUM_LIMIT  # noqa: F401 - re-exported


def check_torch_momentum_looks_like_keras(exam: Exam) -> list[Finding]:
    hits = {
        layer.path: layer.native_momentum
        for layer in exam.bn
        if layer.kind.startswith("torch.nn.")
        and layer.native_momentum is not None
        and layer.native_momentum > TORCH_MOMENTUM_LIMIT
    }
    if not hits:
        return []
    m = max(hits.values())
    return [
        Finding(
            id="torch-momentum-looks-like-keras",
            severity="warning",
            layer=layer_summary(list(hits)),
            message=(
                f"PyTorch BN momentum {m:g} is the weight of the *new* batch, so each step keeps "
                f"only {1 - m:.0%} of the running statistics (Keras momentum {1 - m:.2g}); "
                "this looks like Keras's 0.99 pasted into PyTorch."
            ),
            evidence={
                "torch_momentum": hits,
                "keras_equivalent": {p: 1 - v for p, v in hits.items()},
            },
            fix=(
                f"Use momentum={1 - m:.2g} in torch.nn.BatchNorm*d "
                f"(bnlab.keras_to_torch_momentum({m:g}) == {1 - m:.2g}), or bnlab.BatchNorm, "
                "which takes Keras's convention."
            ),
        )
    ]


def check_small_batch(exam: Exam) -> list[Finding]:
    per_layer: dict[str, int] = {}
    for layer in exam.bn:
        if not layer.uses_batch_stats_in_training:
            continue
        sizes = [s for s in (exam.train_batch_size, layer.virtual_batch_size) if s is not None]
        if sizes and min(sizes) < SMALL_BATCH:
            per_layer[layer.path] = min(sizes)
    if not per_layer:
        return []
    smallest = min(per_layer.values())
    one = smallest == 1
    return [
        Finding(
            id="small-batch",
            severity="error" if one else "warning",
            layer=layer_summary(list(per_layer)),
            message=(
                "Training batches of 1 give BN a single sample per channel: the batch "
                "statistics are that sample, the output is zero (dense layers) and the moving "
                "averages learn nothing useful."
                if one
                else f"Training batches of {smallest} samples per BN layer make the batch "
                f"statistics noisy (below ~{SMALL_BATCH}), so training and inference disagree."
            ),
            evidence={
                "train_batch_size": exam.train_batch_size,
                "samples_per_bn_batch": per_layer,
                "threshold": SMALL_BATCH,
            },
            fix=(
                f"Train with batches of at least {SMALL_BATCH} (32 is Keras's default), or use a "
                "batch-independent norm (GroupNorm/LayerNorm: bnlab.nn.make_norm('group')); "
                "with ghost batches, raise virtual_batch_size."
            ),
        )
    ]


def check_frozen_bn_in_train_mode(exam: Exam) -> list[Finding]:
    hits = [
        layer
        for layer in exam.bn
        if layer.params_frozen
        and layer.uses_batch_stats_in_training
        and layer.in_train_mode is not False
    ]
    if not hits:
        return []
    keras = exam.framework == "keras"
    where = (
        "its gamma/beta variables are frozen but the layer itself is trainable"
        if keras
        else "its gamma/beta have requires_grad=False but the module is in train mode"
    )
    return [
        Finding(
            id="frozen-bn-in-train-mode",
            severity="warning",
            layer=layer_summary([layer.path for layer in hits]),
            message=(
                f"{len(hits)} BN layer(s) look frozen ({where}), yet a training step still "
                "normalises with batch statistics and overwrites the moving averages: the "
                "fine-tuning trap."
            ),
            evidence={
                "layers": {
                    layer.path: {
                        "params_frozen": layer.params_frozen,
                        "in_train_mode": layer.in_train_mode,
                        "uses_batch_stats_in_training": layer.uses_batch_stats_in_training,
                    }
                    for layer in hits
                }
            },
            fix=(
                "Set layer.trainable = False on the BatchNormalization layer itself: in Keras "
                "(>= 2.1.3, and Keras 3) that freezes gamma/beta AND runs the layer in inference "
                "mode even inside fit(); freezing its variables alone does not."
                if keras
                else "Keep frozen BN modules in eval mode while fine-tuning (call .eval() on them "
                "after every model.train()), or use bnlab.BatchNorm and set .trainable = False "
                "(Keras semantics: frozen and in inference mode)."
            ),
        )
    ]
