"""Fold inference-mode batch normalization into the convolution or linear layer before it.

In inference mode BN is the per-channel affine map ``y = x * s + t`` with
``s = gamma / sqrt(moving_variance + epsilon)`` and ``t = beta - moving_mean * s``. When
``x`` is the output of a ``Conv1d/2d/3d`` or ``Linear`` layer (``x = W * u + b``, channel =
output unit) and nothing else reads that output, the two are one layer: ``W' = W * s``
(per output channel) and ``b' = b * s + t``. The arithmetic is done in float64 and cast
back to the layer's dtype.

A BN is folded only where that is exact: it directly follows such a layer (in an
``nn.Sequential``, or in the graph ``torch.fx`` traces), normalises that layer's channel
axis, the layer's output has no other reader and the layer is called once. Every other BN
(after pooling, after an activation, a shared convolution, a model that cannot be traced)
is left as it is and listed in the report with the reason.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd

from bnlab.nn.batchnorm import BatchNorm
from bnlab.nn.fold_report import FoldReport

_LINEAR = (nn.Linear,)


def _is_bn(m: nn.Module) -> bool:
    return isinstance(m, (_BatchNorm, BatchNorm))


def _is_target(m: nn.Module) -> bool:
    return (isinstance(m, _ConvNd) and not isinstance(m, _ConvTransposeNd)) or isinstance(
        m, _LINEAR
    )


def _bn_problem(bn: nn.Module, layer: nn.Module) -> str | None:
    """Why ``bn`` cannot be folded into ``layer`` (whose output it reads), or ``None``."""
    if isinstance(bn, BatchNorm):
        if bn.num_features is None:
            return "the layer is not built (never called)"
        features = bn.num_features
    else:
        if not bn.track_running_stats or bn.running_mean is None:
            return "it keeps no running statistics (normalises with batch statistics)"
        features = bn.num_features
    channels = layer.out_channels if isinstance(layer, _ConvNd) else layer.out_features
    if features != channels:
        return f"it has {features} channels, the {type(layer).__name__} {channels} outputs"
    if isinstance(layer, _ConvNd):
        ndim = len(layer.kernel_size) + 2
        axis_ok = bn.axis % ndim == 1 if isinstance(bn, BatchNorm) else True
    else:
        # A Linear's units are its last axis; torch BN and axis=1 normalise axis 1, the same
        # axis for (N, F) outputs (what BN after Linear is used on).
        ndim = getattr(bn, "_input_ndim", None) or 2
        axis = bn.axis % ndim if isinstance(bn, BatchNorm) else 1
        axis_ok = axis == ndim - 1
    if not axis_ok:
        return f"it normalises axis {bn.axis}, not the {type(layer).__name__}'s channel axis"
    return None


@torch.no_grad()
def fold_into(layer: nn.Module, bn: nn.Module) -> None:
    """Fold ``bn``'s inference-mode affine map into ``layer``'s weight and bias, in place."""
    dtype = layer.weight.dtype
    mean = bn.running_mean.double()
    var = bn.running_var.double()
    eps = bn.epsilon if isinstance(bn, BatchNorm) else bn.eps
    gamma = getattr(bn, "gamma", None) if isinstance(bn, BatchNorm) else bn.weight
    beta = getattr(bn, "beta", None) if isinstance(bn, BatchNorm) else bn.bias
    scale = torch.rsqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma.double()
    shift = -mean * scale
    if beta is not None:
        shift = shift + beta.double()
    weight = layer.weight.double() * scale.reshape(-1, *([1] * (layer.weight.dim() - 1)))
    bias = shift if layer.bias is None else layer.bias.double() * scale + shift
    layer.weight.copy_(weight.to(dtype))
    if layer.bias is None:
        layer.bias = nn.Parameter(bias.to(dtype=dtype, device=layer.weight.device))
    else:
        layer.bias.copy_(bias.to(dtype))


def _occurrences(model: nn.Module) -> dict[int, int]:
    counts: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        counts[id(m)] = counts.get(id(m), 0) + 1
    return counts


def _fold_sequentials(model: nn.Module, report: FoldReport) -> None:
    """Fold adjacent (conv/linear, BN) children of every ``nn.Sequential``; BN -> Identity."""
    counts = _occurrences(model)
    for prefix, seq in list(model.named_modules()):
        if not isinstance(seq, nn.Sequential) or type(seq).forward is not nn.Sequential.forward:
            continue  # a subclass with its own forward may not run its children in order
        names = list(seq._modules)
        for before, after in zip(names, names[1:], strict=False):
            layer, bn = seq._modules[before], seq._modules[after]
            if not (_is_bn(bn) and _is_target(layer)) or counts[id(layer)] > 1:
                continue
            if _bn_problem(bn, layer) is None:
                fold_into(layer, bn)
                seq._modules[after] = nn.Identity()
                full = f"{prefix}." if prefix else ""
                report.folded.append((full + after, full + before))


class _LeafTracer(fx.Tracer):
    """Keeps every module without children (BN, conv, linear, pooling...) as one graph node.

    Only how modules are wired matters for folding; not tracing into leaf modules keeps
    shape-dependent code inside them (custom pooling, padding) from defeating the trace.
    """

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        leaf = next(iter(m.children()), None) is None
        return _is_bn(m) or _is_target(m) or leaf or super().is_leaf_module(m, qualname)


def _describe(node, modules: dict) -> str:
    if not isinstance(node, fx.Node):
        return "a constant"
    if node.op == "placeholder":
        return "the model's input"
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    return getattr(node.target, "__name__", str(node.target))


def _fold_graph(model: nn.Module, report: FoldReport, remaining: dict[str, nn.Module]):
    """Fold the BN nodes of ``model``'s fx graph; returns the new GraphModule or ``None``."""
    try:
        tracer = _LeafTracer()
        graph = tracer.trace(model)
    except Exception as exc:  # noqa: BLE001 - untraceable models keep their BN, with the reason
        why = f"the model cannot be traced by torch.fx ({type(exc).__name__}: {exc})".split("\n")[0]
        report.left += [(name, why) for name in remaining]
        return None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded_any = False
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or node.target not in remaining:
            continue
        bn, prev = modules[node.target], node.args[0] if node.args else None
        layer = (
            modules.get(prev.target)
            if isinstance(prev, fx.Node) and prev.op == "call_module"
            else None
        )
        if len(node.args) != 1 or node.kwargs:
            why = "it is called with extra arguments (a mask)"
        elif layer is None or not _is_target(layer):
            why = f"it follows {_describe(prev, modules)}, not a Conv1d/Conv2d/Conv3d/Linear"
        elif len(prev.users) > 1:
            why = f"the output of {prev.target} is also used elsewhere"
        elif calls[prev.target] > 1 or calls[node.target] > 1:
            why = f"{prev.target} or the BN is called more than once"
        else:
            why = _bn_problem(bn, layer)
        if why is not None:
            report.left.append((node.target, why))
            continue
        fold_into(layer, bn)
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        report.folded.append((node.target, prev.target))
        folded_any = True
    if not folded_any:
        return None
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm


def fold_bn(model):
    """An inference copy of ``model`` with each foldable BN merged into the layer before it.

    ``model`` is a ``torch.nn.Module`` (``torch.nn.BatchNorm*d`` and ``bnlab.BatchNorm``
    layers) or a Keras 3 model (see :func:`bnlab.nn.fold_keras.fold_keras_bn`; a new Keras
    model is returned). The original is never changed. The copy is in eval mode and computes
    the original's eval-mode function (to float rounding). Folds inside ``nn.Sequential``
    keep the model's class (the BN becomes ``nn.Identity``); folds found in the ``torch.fx``
    graph return a ``torch.fx.GraphModule``. ``result.bn_folding`` is the
    :class:`FoldReport`: what was folded where, and each BN left with the reason.
    """
    if any(cls.__module__.startswith("keras.") for cls in type(model).__mro__):
        from bnlab.nn.fold_keras import fold_keras_bn

        return fold_keras_bn(model)
    work = copy.deepcopy(model).eval()
    report = FoldReport()
    _fold_sequentials(work, report)
    remaining = {name: m for name, m in work.named_modules() if _is_bn(m)}
    if remaining:
        graph = _fold_graph(work, report, remaining)
        if graph is not None:
            if hasattr(work, "bnlab_meta"):  # what bnlab.models.build records (input shape...)
                graph.bnlab_meta = work.bnlab_meta
            work = graph.eval()
    work.bn_folding = report
    return work
