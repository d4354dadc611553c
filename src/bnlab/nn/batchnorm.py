"""``BatchNorm``: Keras's ``BatchNormalization`` computed exactly, as a PyTorch module.

Momentum convention (the trap between Keras and PyTorch)
--------------------------------------------------------
``momentum`` is **Keras's**: the fraction of the running value that is *kept*::

    moving_mean     = momentum * moving_mean     + (1 - momentum) * batch_mean
    moving_variance = momentum * moving_variance + (1 - momentum) * batch_variance

PyTorch's ``BatchNorm2d(momentum=0.1)`` is Keras's ``momentum=0.9``; Keras's default
0.99 is PyTorch's 0.01. Use :func:`bnlab.keras_to_torch_momentum` to convert.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from bnlab._validation import check_choice, check_number
from bnlab.errors import ConfigError
from bnlab.nn import batchnorm_config as _config
from bnlab.nn import batchnorm_interop as _interop
from bnlab.nn import bn_math, constraints, initializers, regularizers
from bnlab.nn import functional as BF
from bnlab.nn.batchnorm_config import check_bool, init_parameters
from bnlab.nn.batchnorm_interop import TORCH_BN, TORCH_BN_BY_NDIM, is_torch_bn
from bnlab.nn.batchnorm_train import TrainingStep


class BatchNorm(LazyModuleMixin, TrainingStep, nn.Module):
    """Batch normalization with Keras semantics and every Keras parameter.

    ``momentum`` is Keras's: the fraction of the moving statistics **kept** per training
    step, ``moving = momentum * moving + (1 - momentum) * batch`` (default 0.99). PyTorch's
    ``momentum=0.1`` is ``momentum=0.9`` here; see :func:`bnlab.keras_to_torch_momentum`.

    Parameters
    ----------
    momentum:
        Keras convention, in [0, 1]: 0 keeps only the last batch, 1 never updates. ``None``
        is torch's cumulative average: the moving statistics are the plain average of every
        batch's statistics so far (step ``n`` keeps ``1 - 1/n``).
    epsilon:
        Added to the variance before the square root (> 0; Keras default 1e-3, PyTorch 1e-5).
    center, scale:
        Learn ``beta`` (offset) / ``gamma`` (scale).
    beta_initializer, gamma_initializer, moving_mean_initializer, moving_variance_initializer:
        A Keras name (``"zeros"``, ``"ones"``, ``"constant"``, ``"glorot_uniform"``, ...), a
        serialized dict (Keras's ``{"class_name": "Constant", "config": {"value": 0.5}}``) or
        a callable ``f(tensor) -> None`` that fills the tensor in place.
    beta_regularizer, gamma_regularizer:
        Keras penalties (``"l2"`` = ``L2(0.01)``, a float = an L2 strength, a dict or a
        callable). :meth:`regularization_loss` returns their sum for the trainer to add to the
        data loss, as Keras adds ``model.losses``.
    beta_constraint, gamma_constraint:
        Keras constraints (``"non_neg"``, ``"max_norm"``, ``"unit_norm"``, dict or callable),
        applied by :meth:`apply_constraints` after each optimizer step.
    axis:
        The channel axis of the input: 1 for NCHW (PyTorch layout) and ``(N, C)``; -1 for
        NHWC. Checked against the input's rank at each call.
    renorm, renorm_clipping, renorm_momentum:
        Batch renormalization as Keras 3: ``renorm_clipping`` maps ``"rmax"``, ``"rmin"``,
        ``"dmax"`` to numbers (missing: no clipping) or to callables of the step such as
        :func:`bnlab.nn.functional.renorm_ramp`'s schedule. ``renorm_momentum`` (Keras
        convention) drives the renorm averages ``renorm_mean``/``renorm_stddev`` used for
        ``r``/``d`` in training; ``momentum`` still drives the inference statistics, which
        Keras keeps as ``moving_stddev`` (``sqrt(var + epsilon)``) and exposes as
        ``moving_variance = relu(moving_stddev**2 - epsilon)``.
    virtual_batch_size:
        Ghost batch normalization as tf-keras: in training, the batch of ``N`` samples is
        cut into ``N / virtual_batch_size`` virtual batches, each normalised with its own
        statistics; ``N`` must be a multiple (:class:`ConfigError` otherwise). As in tf-keras
        the batch is reshaped to ``(virtual_batch_size, N / virtual_batch_size, ...)`` so
        virtual batch ``g`` holds samples ``g, g + G, g + 2G, ...``; the moving mean and
        variance are updated once per step with the *average* of the virtual batches' means
        and (within-batch) variances. Inference is unchanged.
    variance:
        ``"biased"`` (Keras) updates the moving variance with the biased batch variance;
        ``"unbiased"`` (PyTorch) with ``n / (n - 1)`` times it (``n`` = values per channel,
        per virtual batch with ghost BN). Normalisation in training always uses the biased
        variance, as both frameworks do. With renorm the ``n / (n - 1)`` factor applies to
        the inference statistics only (``renorm_stddev`` is a training-time quantity).
    num_features:
        Number of channels; ``None`` builds the layer on its first call (like Keras
        ``build``), using PyTorch's lazy-module machinery: until then ``gamma``/``beta`` are
        ``UninitializedParameter`` (an optimizer may already hold them; they are filled in
        place) and ``load_state_dict`` materialises them from the loaded shapes.

    synchronized:
        Keras 3's flag. ``True``: in training, under an initialised ``torch.distributed``
        process group, the batch statistics are those of the union of every process's batch
        (exact pooling, gradients through the all-reduce; see :mod:`bnlab.nn.distributed`).
        Without a process group it behaves as ``False`` and warns once.

    Computation: in training mode (``module.train()`` and ``trainable``), the output is
    ``(x - mean) * rsqrt(var + epsilon) * gamma + beta`` with the batch's mean and biased
    variance; in inference mode the moving statistics are used. ``forward(x, mask)`` takes
    Keras's ``mask`` (``x``'s shape without the channel axis, true = counted): masked
    positions are left out of the batch statistics and so of the moving averages, and every
    position is normalised. Dtypes follow Keras's policy rule
    (:func:`bnlab.nn.bn_math.keras_dtypes`): normalised in float32 (float64 stays float64),
    output in the compute dtype: 16-bit inputs to float32 parameters give 16-bit outputs
    (``mixed_float16``/``mixed_bfloat16``), a 16-bit layer gives 16-bit outputs.

    ``layer.trainable = False`` freezes ``gamma``/``beta`` *and* runs the layer in inference
    mode even inside a training step, without updating the statistics (Keras >= 2.1.3).

    Buffers: ``moving_mean``, ``moving_variance``, ``num_batches_tracked`` (training steps
    taken); with renorm also ``moving_stddev``, ``renorm_mean``, ``renorm_stddev``.
    ``running_mean``/``running_var``/``eps`` alias them for tools written for torch BN.
    """

    cls_to_become = None  # stays a BatchNorm once built

    def __init__(
        self,
        momentum: float = 0.99,
        epsilon: float = 1e-3,
        center: bool = True,
        scale: bool = True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        axis: int = 1,
        renorm: bool = False,
        renorm_clipping: dict | None = None,
        renorm_momentum: float = 0.99,
        virtual_batch_size: int | None = None,
        variance: str = "biased",
        num_features: int | None = None,
        synchronized: bool = False,
    ):
        with warnings.catch_warnings():
            # Older PyTorch releases warn that lazy modules are experimental.
            warnings.filterwarnings("ignore", message="Lazy modules are a new feature")
            super().__init__()
        self.momentum = _config.check_momentum(momentum)
        self.epsilon = float(check_number("epsilon", epsilon, low=0.0, low_inclusive=False))
        self.center = check_bool("center", center)
        self.scale = check_bool("scale", scale)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ConfigError(f"axis: {axis!r} is not an integer")
        self.axis = axis
        self.variance = check_choice("variance", variance, ("biased", "unbiased"))
        self.beta_initializer = initializers.deserialize(beta_initializer, "beta_initializer")
        self.gamma_initializer = initializers.deserialize(gamma_initializer, "gamma_initializer")
        self.moving_mean_initializer = initializers.deserialize(
            moving_mean_initializer, "moving_mean_initializer"
        )
        self.moving_variance_initializer = initializers.deserialize(
            moving_variance_initializer, "moving_variance_initializer"
        )
        self.beta_regularizer = regularizers.deserialize(beta_regularizer, "beta_regularizer")
        self.gamma_regularizer = regularizers.deserialize(gamma_regularizer, "gamma_regularizer")
        self.beta_constraint = constraints.deserialize(beta_constraint, "beta_constraint")
        self.gamma_constraint = constraints.deserialize(gamma_constraint, "gamma_constraint")
        self.renorm = check_bool("renorm", renorm)
        renorm_clipping = BF.deserialize_clipping(renorm_clipping)
        if self.renorm:
            self.renorm_clipping = BF.check_renorm_clipping(renorm_clipping)
        elif renorm_clipping is not None:
            raise ConfigError(
                f"renorm_clipping: {renorm_clipping!r} is given but renorm=False; "
                "pass renorm=True to use it"
            )
        else:
            self.renorm_clipping = None
        self.renorm_momentum = float(
            check_number("renorm_momentum", renorm_momentum, low=0.0, high=1.0)
        )
        if virtual_batch_size is not None:
            virtual_batch_size = check_number(
                "virtual_batch_size", virtual_batch_size, low=1, integer=True
            )
        self.virtual_batch_size = virtual_batch_size
        self.synchronized = check_bool("synchronized", synchronized)
        if self.synchronized and virtual_batch_size is not None:
            raise ConfigError(
                f"synchronized: True with virtual_batch_size={virtual_batch_size}; ghost batches "
                "are per process, pick one of the two"
            )
        if num_features is not None:
            num_features = check_number("num_features", num_features, low=1, integer=True)
        self._trainable = True
        self._stats_pass = False  # set by bnlab.nn.precise while it measures statistics
        self._input_ndim: int | None = None  # rank of the last input (chooses to_torch's class)
        self._torch_cls: type | None = None  # the class from_torch read, for to_torch
        self.num_features = num_features
        self._create_state(num_features)
        if num_features is not None:
            self.reset_parameters()

    # ------------------------------------------------------------------ state
    def _state_names(self) -> list[str]:
        names = ["moving_mean", "moving_variance"]
        if self.renorm:
            names += ["moving_stddev", "renorm_mean", "renorm_stddev"]
        return names

    def _create_state(self, num_features: int | None) -> None:
        """Register gamma/beta and the statistics, or lazy placeholders (Keras's ``build``)."""

        def param() -> nn.Parameter:
            if num_features is None:
                return UninitializedParameter()
            return nn.Parameter(torch.empty(num_features))

        def buffer() -> torch.Tensor:
            return UninitializedBuffer() if num_features is None else torch.empty(num_features)

        self.register_parameter("gamma", param() if self.scale else None)
        self.register_parameter("beta", param() if self.center else None)
        for name in self._state_names():
            self.register_buffer(name, buffer())
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def initialize_parameters(self, x: torch.Tensor, *args, **kwargs) -> None:
        """Build on the first call: infer ``num_features`` from ``x`` along ``axis``."""
        if not self.has_uninitialized_params():
            if self.num_features is None:  # materialised by load_state_dict: keep the values
                self.num_features = int(self.moving_mean.shape[0])
                self._apply_trainable()
            return
        channels = int(x.shape[self._channel_axis(x)])
        with torch.no_grad():
            for tensor in [self.gamma, self.beta] + [getattr(self, n) for n in self._state_names()]:
                if tensor is not None and is_lazy(tensor):
                    tensor.materialize((channels,))
        self.num_features = channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialise gamma, beta and the statistics from the initializers.

        With renorm, ``moving_stddev`` and ``renorm_stddev`` start at
        ``sqrt(moving_variance_initializer)`` and ``renorm_mean`` at
        ``moving_mean_initializer``, as Keras builds them.
        """
        if self.num_features is None or self.has_uninitialized_params():
            return
        if self.gamma is not None:
            self.gamma_initializer(self.gamma.data)
        if self.beta is not None:
            self.beta_initializer(self.beta.data)
        self.moving_mean_initializer(self.moving_mean)
        self.moving_variance_initializer(self.moving_variance)
        if self.renorm:
            with torch.no_grad():
                self.moving_mean_initializer(self.renorm_mean)
                self.moving_stddev.copy_(self.moving_variance.sqrt())
                self.renorm_stddev.copy_(self.moving_variance.sqrt())
        self.num_batches_tracked.zero_()
        self._apply_trainable()

    def __deepcopy__(self, memo: dict) -> BatchNorm:
        # Uninitialized (lazy) tensors refuse deepcopy; give the copy fresh placeholders with
        # the same device/dtype. Everything else is copied as Module's default would.
        for name, tensor in list(self._parameters.items()) + list(self._buffers.items()):
            if tensor is not None and is_lazy(tensor):
                kind = UninitializedParameter if name in self._parameters else UninitializedBuffer
                memo[id(tensor)] = kind(
                    requires_grad=tensor.requires_grad, device=tensor.device, dtype=tensor.dtype
                )
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        new.__setstate__(copy.deepcopy(self.__dict__, memo))
        return new

    @property
    def trainable(self) -> bool:
        """Keras's ``trainable``: ``False`` freezes gamma/beta and forces inference mode."""
        return self._trainable

    @trainable.setter
    def trainable(self, value: bool) -> None:
        self._trainable = check_bool("trainable", value)
        self._apply_trainable()

    def _apply_trainable(self) -> None:
        for p in (self.gamma, self.beta):
            if p is not None and not is_lazy(p):
                p.requires_grad_(self._trainable)

    # PyTorch-style aliases so tools written for torch BN read this layer too.
    @property
    def running_mean(self) -> torch.Tensor | None:
        return self.moving_mean

    @property
    def running_var(self) -> torch.Tensor | None:
        return self.moving_variance

    @property
    def eps(self) -> float:
        return self.epsilon

    # --------------------------------------------------------------- forward
    def _channel_axis(self, x: torch.Tensor) -> int:
        if not -x.dim() <= self.axis < x.dim():
            raise ConfigError(
                f"axis: {self.axis!r} is out of range for an input of {x.dim()} dimensions "
                f"(shape {tuple(x.shape)}); allowed are {-x.dim()}..{x.dim() - 1}"
            )
        return self.axis % x.dim()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_features is None:  # normally built by the lazy pre-hook already
            self.initialize_parameters(x)
        axis = self._channel_axis(x)
        if x.shape[axis] != self.num_features:
            raise ConfigError(
                f"num_features: the layer has {self.num_features} channels but the input has "
                f"{x.shape[axis]} along axis {self.axis} (shape {tuple(x.shape)})"
            )
        self._input_ndim = x.dim()
        out_dtype, compute = bn_math.keras_dtypes(x.dtype, self.moving_mean.dtype)
        xc = BF.channels_first(x.to(out_dtype).to(compute), axis)
        gamma = None if self.gamma is None else self.gamma.to(compute)
        beta = None if self.beta is None else self.beta.to(compute)

        if self.training and self._trainable:
            if self._stats_pass:
                # Measuring population statistics (bnlab.nn.precise): normalise with the
                # whole batch's statistics, as a torch BN in training mode, update nothing.
                self._check_count(xc, axis, groups=1)
                out = BF.batch_norm_with_stats(xc, gamma, beta, self.epsilon)
            else:
                synced = self.synchronized and self._synchronizing()
                if mask is not None or synced:
                    mask_c = None if mask is None else bn_math.channels_first_mask(mask, x, axis)
                    out = self._forward_train_pooled(xc, axis, gamma, beta, mask_c, synced)
                else:
                    out = self._forward_train(xc, axis, gamma, beta)
        else:
            if mask is not None:
                bn_math.channels_first_mask(mask, x, axis)  # Keras ignores it; check the shape
            out = BF.batch_norm_eval(
                xc,
                self.moving_mean.to(compute),
                self.moving_variance.to(compute),
                gamma,
                beta,
                self.epsilon,
            )
        return BF.channels_back(out, axis).to(out_dtype)

    # ------------------------------------------------- Keras losses/constraints
    def regularization_loss(self) -> torch.Tensor | None:
        """``gamma_regularizer(gamma) + beta_regularizer(beta)``, or ``None``."""
        losses = []
        if self.gamma_regularizer is not None and self.gamma is not None:
            losses.append(self.gamma_regularizer(self.gamma))
        if self.beta_regularizer is not None and self.beta is not None:
            losses.append(self.beta_regularizer(self.beta))
        return sum(losses) if losses else None

    @torch.no_grad()
    def apply_constraints(self) -> None:
        """Project gamma/beta onto their constraints (the trainer calls this after each step)."""
        if self.gamma_constraint is not None and self.gamma is not None:
            self.gamma.copy_(self.gamma_constraint(self.gamma))
        if self.beta_constraint is not None and self.beta is not None:
            self.beta.copy_(self.beta_constraint(self.beta))

    # ------------------------------------------------------------- config
    def get_config(self) -> dict:
        """The constructor arguments as a JSON-able dict (plus ``trainable``).

        Keras 3's keys come first in Keras's order (``synchronized`` included), then bnlab's
        extras. Initializers, regularizers and constraints appear by Keras name or as
        ``{"class_name": ..., "config": ...}``; a custom callable raises
        :class:`ConfigError` because it cannot be written down.
        """
        return _config.config_of(self)

    @classmethod
    def from_config(cls, config: dict) -> BatchNorm:
        """Build from :meth:`get_config`'s dict, or from a Keras ``BatchNormalization`` config.

        Keras's ``name`` and ``dtype`` are ignored, ``trainable`` is applied, a one-element
        ``axis`` list (tf-keras) is read as that axis; unknown keys raise :class:`ConfigError`.
        The weights are not part of a config.
        """
        return _config.from_config(cls, config)

    # --------------------------------------------------------- torch interop
    @classmethod
    def from_torch(cls, torch_bn: nn.Module, **overrides) -> BatchNorm:
        """A ``BatchNorm`` computing what ``torch_bn`` (``torch.nn.BatchNorm{1,2,3}d``) computes.

        Translated: ``momentum`` (torch's fraction of the batch -> Keras's fraction kept,
        0.1 -> 0.9; torch's ``None``, the cumulative average, stays ``None``), ``eps`` ->
        ``epsilon``, ``affine`` -> ``center`` and ``scale``, ``variance="unbiased"``
        (torch's running-variance convention), ``axis=1``. Copied: weight/bias (with their
        ``requires_grad``), running mean/variance, ``num_batches_tracked``, the train/eval
        flag, device and dtype.

        ``overrides`` set other constructor arguments in bnlab's convention, e.g.
        ``momentum=0.99`` or ``variance="biased"``; ``num_features``, ``axis``, ``center`` and
        ``scale`` follow the torch layer and cannot be overridden. A layer without running
        statistics (``track_running_stats=False``) is refused. With a ``renorm=True``
        override the renorm averages start from the running statistics.
        """
        return _interop.from_torch(cls, torch_bn, **overrides)

    def to_torch(self, cls: type | None = None) -> nn.Module:
        """The equivalent ``torch.nn.BatchNorm{1,2,3}d`` (momentum translated, state copied).

        ``cls`` picks the torch class; by default the one :meth:`from_torch` read, else the one
        matching the rank of the last input seen (2 or 3 -> 1d, 4 -> 2d, 5 -> 3d).
        Translated: ``momentum`` (0.9 -> 0.1, ``None`` -> ``None``), ``epsilon`` -> ``eps``;
        ``affine`` is True when ``center`` or ``scale`` is, the missing one being a frozen
        constant (weight 1 or bias 0) so the torch layer computes the same function. Copied:
        gamma/beta, moving statistics, ``num_batches_tracked``, train/eval flag, device, dtype.

        Not translatable (:class:`ConfigError`): renorm, virtual batches, ``trainable=False``
        (torch has no "inference mode while training"), an unbuilt layer, and a channel axis
        other than 1 (or -1 on ``(N, C)`` inputs). PyTorch always updates its running
        variance with the unbiased batch variance: a ``variance="biased"`` layer converts with
        that (``n / (n - 1)``) difference in its future updates, nothing else.
        """
        return _interop.to_torch(self, cls)

    def extra_repr(self) -> str:
        return _config.describe(self)


# Names this module has always exported (other modules import them from here).
_TORCH_BN = TORCH_BN
_TORCH_BN_BY_NDIM = TORCH_BN_BY_NDIM
_check_bool = check_bool


def _init_parameters() -> set[str]:
    return init_parameters(BatchNorm)


__all__ = ["BatchNorm", "is_torch_bn"]
