"""The layer and its relatives: BatchNorm (Keras semantics), norm registry, model surgery.

``momentum`` is Keras's everywhere in bnlab.nn: the fraction of a moving statistic *kept*
per training step (PyTorch's 0.1 is 0.9 here; see :func:`keras_to_torch_momentum`).
"""

from bnlab.nn import functional
from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.fold import FoldReport, fold_bn
from bnlab.nn.functional import Ramp, renorm_ramp
from bnlab.nn.layers import Conv2d, Dense, apply_constraints, regularization_loss
from bnlab.nn.momentum import keras_to_torch_momentum, torch_to_keras_momentum
from bnlab.nn.norms import GroupNorm, InstanceNorm, LayerNorm
from bnlab.nn.precise import precise_bn_stats
from bnlab.nn.registry import make_norm, norm_kinds, register_norm
from bnlab.nn.surgery import convert, find_bn_layers

__all__ = [
    "BatchNorm",
    "Conv2d",
    "Dense",
    "FoldReport",
    "GroupNorm",
    "InstanceNorm",
    "LayerNorm",
    "Ramp",
    "apply_constraints",
    "convert",
    "find_bn_layers",
    "fold_bn",
    "functional",
    "keras_to_torch_momentum",
    "make_norm",
    "norm_kinds",
    "precise_bn_stats",
    "regularization_loss",
    "register_norm",
    "renorm_ramp",
    "torch_to_keras_momentum",
]
