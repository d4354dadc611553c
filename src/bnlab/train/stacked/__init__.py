"""The stacked engine: K runs of one architecture trained at once, as one model.

A study trains many copies of one small network (seeds x variants). Trained one by one, each
step of each run is a handful of tiny kernels and a lot of Python; on a GPU the work is
launch-bound, not compute-bound. :func:`fit_stacked` trains ``K`` runs as *one* model whose
every layer holds the ``K`` runs' tensors side by side, so one kernel does the work of ``K``.

Each run stays the run it would be alone (the parity tests check it): its own initial
weights (the caller builds each model from its seed, exactly as the sequential runner does,
and the engine stacks them), its own data order (:func:`bnlab.train.batching.permutation` with
its seed, gathered on the device by index), its own BN statistics, its own dropout masks
(optionally from its own generator, the stream ``fit`` uses), its own optimizer state, learning
rate, momentum, L2 strength, and its own :class:`~bnlab.train.History` with every metric
``fit`` records, defined identically.

How the runs are stacked
------------------------
Activations of a stack are carried *channel-stacked*: ``(B, K*C, H, W)`` for images and
``(B, K*F)`` for features, run ``k`` owning channels ``[k*C, (k+1)*C)``; row ``b`` of run ``k``
is sample ``b`` of *that run's* batch. Then

* a convolution is one grouped convolution (``groups = K * groups``), weights ``(K*O, C, kh, kw)``;
* a dense layer is one batched matmul over ``(K, B, F) @ (K, F, O)``;
* batch normalization is per-channel statistics over ``K*C`` channels: each run's statistics
  come from its own batch only; momentum and epsilon are per-run vectors;
* ReLU, max/average pooling and zero padding act per channel, so the unmodified PyTorch module
  runs on the stacked tensor;
* Flatten reorders per run (Keras's ``(H, W, C)`` order of :class:`bnlab.models.layers.Flatten`,
  or PyTorch's ``(C, H, W)``);
* dropout draws a mask per run.

Evaluation feeds the *same* samples to every run: the input is shared (``C`` channels, not
``K*C``) until the first stacked layer, which expands it; a first convolution or dense layer
reads the shared input directly with its ``K*O`` output channels (no ``K``-fold copy).

And ``torch.func.vmap``? ``kernels="vmap"`` (:class:`VmapModel`) runs ``vmap`` over
``functional_call`` with ``torch.func.stack_module_state``: it stacks *any* module (a user's
own architecture too, which the stacked layers refuse), and BN buffers update in place as
stacked tensors. What it cannot hold is per-run Python settings: bnlab's
:class:`~bnlab.nn.BatchNorm` keeps ``momentum``/``epsilon`` as floats of one module, so runs
that differ in momentum (the question of seeds 000/001) need the stacked layers; per-run
dropout generators cannot be expressed (``randomness="different"`` draws one stream). The
hand-written stacked layers above are few, since the presets use few layer types; for
anything else :func:`stack_signature` raises :class:`StackingError` (the study runs it
sequentially) and ``kernels="vmap"`` is the way to stack it.

Optimizers
----------
Keras's Adam, SGD and RMSprop (:mod:`bnlab.train.optimizers`) are element-wise, so they run on
one flat buffer holding every stacked parameter (each parameter is a view into it, its
gradient a view into a flat gradient buffer) with the same operations in the same order as the
per-run optimizer: identical arithmetic per run, per-run learning rates as a vector. The step
count is a device tensor (no host sync, capturable in a CUDA graph).

Divergence
----------
A run whose epoch loss (or validation loss) is NaN/inf is recorded exactly as ``fit`` records
it (that epoch, then ``diverged_at_epoch``) and is then dropped from the stack: its final
weights go back to its model, the remaining runs are re-stacked and go on.

Devices and precision
---------------------
Everything stays on the device: the data are moved once; per epoch one ``(K, n)`` index tensor
goes to the device; metrics are reduced there and read once per epoch (the NaN check too).
On CUDA: channels-last activations and weights, ``precision="tf32"`` (TF32 matmuls and
convolutions) or ``"bf16"`` (autocast; BN statistics and normalisation stay float32, and so do
the parameters, the optimizer and the loss), and the fixed-shape training step captured in a
CUDA graph per batch size (``cuda_graphs``). On CPU, ``precision="bf16"`` autocasts as well.

Random streams
--------------
``dropout_rng="per_run"`` (the CPU default) gives run ``k`` a ``torch.Generator`` seeded like
``fit`` seeds its dropout stream, drawing the same masks in the same order as ``fit`` does on
CPU: a run trained stacked then equals the same run trained alone, dropout included.
``"shared"`` (the CUDA default; required for CUDA graphs) draws one mask tensor for the whole
stack from the device's default generator: masks are independent across runs, but a run's
masks depend on the stack it is in. Augmentation uses one generator per run, seeded like
``fit``'s.

Modules
-------
:mod:`~bnlab.train.stacked.signature` (what a stack needs equal), ``layers`` and
``batchnorm`` (the stacked layers), ``model`` (:class:`StackedModel`), ``optimizer``
(:class:`StackedOptimizer`), ``evaluation`` (shared-input evaluation, exact BN statistics),
``config`` (arguments checked and data moved once), ``stack`` (one step, one epoch),
``graphs`` (CUDA-graph capture), ``loop`` (the epoch loop of one chunk), ``api`` (the
public entry points) and ``vmap`` (:class:`VmapModel`: ``kernels="vmap"``, any torch module
stacked with ``torch.func``; :func:`vmap_signature` says which models stack).
"""

from __future__ import annotations

from bnlab.train.options import DROPOUT_RNG, KERNELS, PRECISIONS
from bnlab.train.stacked.api import fit_stacked, iter_fit_stacked
from bnlab.train.stacked.batchnorm import StackedBatchNorm
from bnlab.train.stacked.config import _Config, _Data, _prepare
from bnlab.train.stacked.evaluation import evaluate_stacked, precise_stats_stacked
from bnlab.train.stacked.layers import (
    StackedConv2d,
    StackedDropout,
    StackedFlatten,
    StackedLinear,
)
from bnlab.train.stacked.model import StackedModel
from bnlab.train.stacked.optimizer import StackedOptimizer
from bnlab.train.stacked.signature import CHANNELWISE, StackingError, stack_signature
from bnlab.train.stacked.stack import _Stack
from bnlab.train.stacked.vmap import VmapModel, vmap_refusal, vmap_settings, vmap_signature

__all__ = [
    "CHANNELWISE",
    "DROPOUT_RNG",
    "KERNELS",
    "PRECISIONS",
    "StackedBatchNorm",
    "StackedConv2d",
    "StackedDropout",
    "StackedFlatten",
    "StackedLinear",
    "StackedModel",
    "StackedOptimizer",
    "StackingError",
    "VmapModel",
    "_Config",
    "_Data",
    "_Stack",
    "_prepare",
    "evaluate_stacked",
    "fit_stacked",
    "iter_fit_stacked",
    "precise_stats_stacked",
    "stack_signature",
    "vmap_refusal",
    "vmap_settings",
    "vmap_signature",
]
