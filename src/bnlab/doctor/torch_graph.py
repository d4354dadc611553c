"""The layer graph of a PyTorch module, for the doctor's structural checks.

``torch.fx`` symbolic tracing gives the true data flow (which module feeds which, functional
calls such as ``F.relu`` included). Every module without children is kept as one node, so
bnlab's own layers (``bnlab.BatchNorm``, ``Dense``, ``Conv2d``) appear as layers rather than
as the arithmetic inside them. Models that cannot be traced (data-dependent control flow)
fall back to the registration order of their leaf modules read as a chain, which is right
for ``nn.Sequential``-like models; ``Graph.source`` says which was used.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab.doctor.model_view import Graph, Node
from bnlab.nn.batchnorm import BatchNorm

_DROPOUT = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
    nn.Mish, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.LogSoftmax, nn.Softplus, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh,
)  # fmt: skip
_POOL = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_PAD = (
    nn.ZeroPad1d,
    nn.ZeroPad2d,
    nn.ZeroPad3d,
    nn.ConstantPad1d,
    nn.ConstantPad2d,
    nn.ConstantPad3d,
)

_FUNCTION_KINDS = {
    "relu": "activation", "relu_": "activation", "leaky_relu": "activation", "gelu": "activation",
    "silu": "activation", "elu": "activation", "sigmoid": "activation", "tanh": "activation",
    "softmax": "activation", "log_softmax": "activation", "relu6": "activation",
    "flatten": "flatten", "reshape": "flatten", "view": "flatten", "squeeze": "flatten",
    "unsqueeze": "flatten", "dropout": "dropout", "dropout1d": "dropout", "dropout2d": "dropout",
    "max_pool1d": "pool", "max_pool2d": "pool", "max_pool3d": "pool", "avg_pool1d": "pool",
    "avg_pool2d": "pool", "avg_pool3d": "pool", "adaptive_avg_pool1d": "pool",
    "adaptive_avg_pool2d": "pool", "adaptive_max_pool2d": "pool", "contiguous": "identity",
}  # fmt: skip


def is_bn(module: nn.Module) -> bool:
    """PyTorch's BatchNorm*d / SyncBatchNorm and bnlab's Keras-semantics BatchNorm.

    bnlab.freeze's FrozenBatchNorm is not one: it is a fixed affine map, nothing to diagnose
    or recalibrate.
    """
    return isinstance(module, (_BatchNorm, BatchNorm))


def _activation_name(name: str) -> str:
    return name.lower().replace("_", "").rstrip("_")


def _weight_attrs(module: nn.Module) -> dict:
    reg = getattr(module, "kernel_regularizer", None)
    l2 = getattr(reg, "l2", None) if reg is not None else None
    bias = getattr(module, "bias", None)
    return {
        "bias": bias is not None,
        "bias_params": 0 if bias is None else int(bias.numel()),
        "l2": l2,
        "regularized": reg is not None,
    }


def classify_module(module: nn.Module) -> tuple[str, dict]:
    """``(kind, attrs)`` for a leaf module; ``attrs["type"]`` is its class name."""
    kind, attrs = _classify_module(module)
    attrs.setdefault("type", type(module).__name__)
    return kind, attrs


def _classify_module(module: nn.Module) -> tuple[str, dict]:
    if is_bn(module):
        return "bn", {}
    if isinstance(module, nn.Linear):
        return "linear", _weight_attrs(module)
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv", _weight_attrs(module)
    if isinstance(module, _DROPOUT):
        return "dropout", {"p": getattr(module, "p", None)}
    if isinstance(module, _ACTIVATIONS):
        return "activation", {"fn": _activation_name(type(module).__name__)}
    if isinstance(module, _POOL):
        return "pool", {}
    if isinstance(module, (nn.Flatten, nn.Unflatten)):
        return "flatten", {}
    if isinstance(module, nn.Identity):
        return "identity", {}
    if isinstance(module, _PAD):
        return "pad", {}
    return "other", {}


def _classify_call(name: str) -> tuple[str, dict]:
    kind = _FUNCTION_KINDS.get(name, "other")
    attrs = {"fn": _activation_name(name)} if kind == "activation" else {}
    attrs["type"] = name
    return kind, attrs


class _LeafTracer(fx.Tracer):
    """Keeps every module without children (bnlab's layers included) as one call."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return next(iter(m.children()), None) is None or super().is_leaf_module(
            m, module_qualified_name
        )


def fx_graph(model: nn.Module) -> Graph:
    """The traced data flow of ``model`` (raises when tracing fails)."""
    traced = _LeafTracer().trace(model)
    nodes: dict[str, Node] = {}
    outputs: list[str] = []
    for n in traced.nodes:
        inputs = [a.name for a in n.all_input_nodes]
        if n.op == "placeholder":
            nodes[n.name] = Node(n.name, n.name, "input")
            continue
        if n.op == "output":
            outputs = inputs
            continue
        if n.op == "call_module":
            kind, attrs = classify_module(model.get_submodule(n.target))
            path = str(n.target)
        elif n.op in ("call_function", "call_method"):
            fname = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
            kind, attrs = _classify_call(fname)
            path = n.name
        else:  # get_attr: a constant or parameter read
            kind, attrs, path = "other", {"type": "attribute"}, str(n.target)
        nodes[n.name] = Node(n.name, path, kind, inputs, attrs)
    calls: dict[str, int] = {}
    for node in nodes.values():
        if node.kind == "bn":
            calls[node.path] = calls.get(node.path, 0) + 1
    for node in nodes.values():
        if node.kind == "bn" and calls[node.path] > 1:
            node.attrs["call_sites"] = calls[node.path]
    return Graph(nodes, outputs, "torch.fx")


def registration_graph(model: nn.Module) -> Graph:
    """Leaf modules in registration order, read as a chain (``nn.Sequential`` semantics)."""
    nodes: dict[str, Node] = {"input": Node("input", "input", "input")}
    prev = "input"
    for path, module in model.named_modules():
        if not path or next(iter(module.children()), None) is not None:
            continue
        kind, attrs = classify_module(module)
        nodes[path] = Node(path, path, kind, [prev], attrs)
        prev = path
    return Graph(nodes, [prev], "registration order")


def module_graph(model: nn.Module) -> Graph:
    """fx data flow when the model traces, registration order otherwise."""
    try:
        with torch.no_grad():
            return fx_graph(model)
    except Exception:  # noqa: BLE001 - any tracing failure means: use the fallback
        return registration_graph(model)
