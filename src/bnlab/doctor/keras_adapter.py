"""The doctor's adapter for Keras 3 models on the torch backend (the ``keras`` extra).

Keras is imported here only, when a Keras model reaches the doctor. Keras's momentum is
already the fraction kept, its moving variance is biased, its layers take channels-last
inputs (a bnlab Dataset's NCHW images are transposed), and ``layer.trainable = False`` on a
``BatchNormalization`` layer freezes gamma/beta *and* runs it in inference mode even in a
training step (Keras >= 2.1.3 semantics).

To observe a layer's input or switch dropout off for one call, the adapter sets an
instance attribute ``call`` on that layer and removes it in ``finally``; Keras's
``Layer.__call__`` looks ``self.call`` up at call time, so nothing else changes.
"""

from __future__ import annotations

import copy
import os
from contextlib import ExitStack, contextmanager

import numpy as np
import torch

from bnlab.doctor.capture import record
from bnlab.doctor.model_view import BNLayer, Graph, ModelAdapter, Node
from bnlab.errors import ConfigError, DataError

_DROPOUT = {
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
    "AlphaDropout", "GaussianNoise",
}  # fmt: skip
_ACTIVATION_LAYERS = {"Activation", "ReLU", "LeakyReLU", "Softmax", "ELU", "PReLU"}


def import_keras():
    """Keras 3 on the torch backend, or a ConfigError saying what is missing."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as exc:
        raise ConfigError(
            "model: Keras models need the keras extra (pip install bnlab[keras])"
        ) from exc
    if keras.backend.backend() != "torch":
        raise ConfigError(
            f"model: Keras runs on the {keras.backend.backend()!r} backend; the doctor needs "
            "KERAS_BACKEND=torch set before Keras is first imported"
        )
    return keras


def _numpy(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(getattr(value, "numpy", lambda: value)())


def _activation(layer) -> str | None:
    fn = getattr(layer, "activation", None)
    return getattr(fn, "__name__", None) if fn is not None else None


def classify_layer(layer) -> tuple[str, dict]:
    """``(kind, attrs)`` for one Keras layer (by class name: no Keras import needed)."""
    kind, attrs = _classify_layer(layer)
    attrs.setdefault("type", type(layer).__name__)
    return kind, attrs


def _classify_layer(layer) -> tuple[str, dict]:
    name = type(layer).__name__
    if name == "BatchNormalization":
        return "bn", {}
    if name in ("Dense", "EinsumDense") or name.startswith("Conv") or "Conv" in name:
        reg = getattr(layer, "kernel_regularizer", None)
        l2 = None
        if reg is not None and hasattr(reg, "get_config"):
            l2 = reg.get_config().get("l2")
        kind = "linear" if name in ("Dense", "EinsumDense") else "conv"
        return kind, {
            "bias": bool(getattr(layer, "use_bias", False)),
            "bias_params": int(np.prod(layer.bias.shape))
            if getattr(layer, "bias", None) is not None
            else 0,
            "l2": None if l2 is None else float(l2),
            "regularized": reg is not None,
            "activation": _activation(layer),
        }
    if name in _DROPOUT:
        return "dropout", {"p": getattr(layer, "rate", None)}
    if name in _ACTIVATION_LAYERS:
        fn = _activation(layer) if name == "Activation" else name
        return "activation", {"fn": (fn or "linear").lower().replace("_", "")}
    if "Pooling" in name:
        return "pool", {}
    if name in ("Flatten", "Reshape"):
        return "flatten", {}
    if name.startswith(("ZeroPadding", "Cropping")):
        return "pad", {}
    if name == "InputLayer":
        return "input", {}
    if name in ("Rescaling", "Normalization"):
        return "rescale", {}
    return "other", {}


def _functional(model):
    """The functional graph of a Keras model (``None`` for plain layers and subclassed models)."""
    if not hasattr(model, "_flatten_layers") or not hasattr(model, "outputs"):
        return None
    graph = getattr(model, "_functional", None) or model
    return graph if hasattr(graph, "operations") and getattr(graph, "outputs", None) else None


def _in(node, members: set[str]) -> bool:
    """Whether a call of a layer reads tensors produced inside ``members`` (this graph)."""
    return any(t._keras_history.operation.name in members for t in node.input_tensors)


class KerasAdapter(ModelAdapter):
    """Reads and runs a Keras 3 model; see :mod:`bnlab.doctor.model_view`."""

    framework = "keras"

    def __init__(self, model):
        self.keras = import_keras()
        self.model = model
        layers = model._flatten_layers(include_self=False, recursive=True)
        self._layers = list(layers)
        self._bns = [lay for lay in self._layers if type(lay).__name__ == "BatchNormalization"]
        self._graph: Graph | None = None

    # ----------------------------------------------------------------- static
    def bn_layers(self) -> list[BNLayer]:
        out = []
        for lay in self._bns:
            params = [
                v
                for v in (getattr(lay, "gamma", None), getattr(lay, "beta", None))
                if v is not None
            ]
            out.append(
                BNLayer(
                    path=lay.name,
                    kind="keras.BatchNormalization",
                    num_features=int(lay.moving_mean.shape[0]) if lay.built else 0,
                    momentum=float(lay.momentum),
                    native_momentum=float(lay.momentum),
                    epsilon=float(lay.epsilon),
                    steps=None,  # Keras layers do not count; the optimizer's iterations do
                    variance="biased",
                    has_params=bool(params),
                    params_frozen=bool(params) and not any(v.trainable for v in params),
                    uses_batch_stats_in_training=bool(lay.trainable),
                    in_train_mode=None,
                )
            )
        return out

    def graph(self) -> Graph:
        if self._graph is None:
            try:
                self._graph = self._keras_graph()
            except Exception:  # noqa: BLE001 - subclassed models have no graph: use layer order
                self._graph = self._chain_graph()
        return self._graph

    def _add_layer(self, nodes: dict[str, Node], layer, inputs: list[str], out_name: dict) -> None:
        kind, attrs = classify_layer(layer)
        nodes[layer.name] = Node(layer.name, layer.name, kind, inputs, attrs)
        out_name[layer.name] = layer.name
        act = attrs.get("activation")
        if kind in ("linear", "conv") and act not in (None, "linear"):
            # Keras fuses the activation into Dense/Conv; the doctor needs it as its own step.
            name = f"{layer.name}.activation"
            nodes[name] = Node(name, f"{layer.name} (activation={act})", "activation",
                               [layer.name], {"fn": act.lower().replace("_", "")})  # fmt: skip
            out_name[layer.name] = name

    def _keras_graph(self) -> Graph:
        """Every layer call, nested models (Sequential inside functional, sub-models) inlined."""
        nodes: dict[str, Node] = {}
        out_name: dict[str, str] = {}
        functional = _functional(self.model)
        self._walk(functional, nodes, out_name, entry=None)
        outputs = [out_name[t._keras_history.operation.name] for t in functional.outputs]
        return Graph(nodes, outputs, "keras graph")

    def _walk(self, functional, nodes: dict, out_name: dict, entry: list[str] | None) -> None:
        members = {op.name for op in functional.operations}
        for op in functional.operations:
            inputs = []
            for node in op._inbound_nodes:
                for t in node.input_tensors:
                    parent = t._keras_history.operation.name
                    if parent in members and parent in out_name and out_name[parent] not in inputs:
                        inputs.append(out_name[parent])
            if entry is not None and type(op).__name__ == "InputLayer":
                out_name[op.name] = entry[0] if entry else op.name  # the outer tensor feeds it
                continue
            inner = _functional(op) if op is not functional else None
            if inner is not None:
                self._walk(inner, nodes, out_name, entry=inputs)
                outs = [out_name[t._keras_history.operation.name] for t in inner.outputs]
                out_name[op.name] = outs[0]
                continue
            if op.name in nodes:  # a layer called again (shared): one more call site
                calls = nodes[op.name].attrs.setdefault("call_sites", 1) + 1
                nodes[op.name].attrs["call_sites"] = calls
                for i in inputs:
                    if i not in nodes[op.name].inputs:
                        nodes[op.name].inputs.append(i)
                continue
            self._add_layer(nodes, op, inputs, out_name)
            calls = sum(1 for n in op._inbound_nodes if _in(n, members))
            if calls > 1:
                nodes[op.name].attrs["call_sites"] = calls

    def _chain_graph(self) -> Graph:
        nodes: dict[str, Node] = {"input": Node("input", "input", "input")}
        out_name: dict[str, str] = {}
        prev = "input"
        for layer in self.model.layers:
            self._add_layer(nodes, layer, [prev], out_name)
            prev = out_name[layer.name]
        return Graph(nodes, [prev], "layer order")

    def _output_activation(self) -> str | None:
        graph = self.graph()
        if len(graph.outputs) != 1:
            return None
        node = graph.nodes[graph.outputs[0]]
        fn = node.attrs.get("fn") if node.kind == "activation" else None
        return fn if fn in ("softmax", "sigmoid") else None

    def copy(self) -> KerasAdapter:
        keras = self.keras
        model = self.model
        if type(model).__name__ in ("Sequential", "Functional"):
            clone = keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
            for src, dst in zip(model.weights, clone.weights, strict=True):
                dst.trainable = src.trainable
            if getattr(model, "compiled", False):
                try:
                    clone.compile_from_config(model.get_compile_config())
                except Exception:  # noqa: BLE001 - an uncompiled clone still predicts
                    pass
        else:
            clone = copy.deepcopy(model)
        return KerasAdapter(clone)

    def _expected_shape(self) -> tuple | None:
        inputs = getattr(self.model, "inputs", None)
        if not inputs:
            return None
        return tuple(inputs[0].shape[1:])

    def prepare(self, x: torch.Tensor, layout: str):
        expected = self._expected_shape()

        def fits(shape) -> bool:
            return (
                expected is not None
                and len(shape) == len(expected)
                and all(e is None or e == s for e, s in zip(expected, shape, strict=True))
            )

        shape = tuple(x.shape[1:])
        if x.dim() == 4:
            nhwc = (shape[1], shape[2], shape[0])
            if layout == "NCHW" and (expected is None or fits(nhwc)):
                x = x.permute(0, 2, 3, 1)
                shape = nhwc
            elif layout != "NCHW" and not fits(shape) and fits(nhwc):
                x = x.permute(0, 2, 3, 1)
                shape = nhwc
        if expected is not None and not fits(shape):
            raise DataError(
                f"data: samples of shape {tuple(x.shape[1:])} do not fit the model, which takes "
                f"{expected} (channels last)"
            )
        return self.keras.ops.convert_to_tensor(x.contiguous().to(torch.float32))

    # ---------------------------------------------------------------- running
    @contextmanager
    def _patched(self, layer, fn):
        had = "call" in layer.__dict__
        old = layer.__dict__.get("call")
        layer.call = fn
        try:
            yield
        finally:
            if had:
                layer.call = old
            else:
                del layer.call

    def forward(self, x, *, train: bool, capture: dict | None = None) -> torch.Tensor:
        saved = []
        if train:  # Keras updates moving statistics in a training call: put them back after
            saved = [
                (v, _numpy(v).copy())
                for lay in self._bns
                for v in (lay.moving_mean, lay.moving_variance)
            ]
        try:
            with ExitStack() as stack:
                for lay in self._layers:
                    if type(lay).__name__ in _DROPOUT:
                        stack.enter_context(self._patched(lay, lambda inputs, *a, **k: inputs))
                if capture is not None:
                    for lay in self._bns:
                        stack.enter_context(self._patched(lay, self._recorder(lay, capture)))
                with torch.no_grad():
                    out = self.model(x, training=train)
        except (ConfigError, DataError):
            raise
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(
                f"data: inputs of shape {tuple(x.shape[1:])} do not fit the model ({first})"
            ) from exc
        finally:
            for var, value in saved:
                var.assign(value)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = torch.as_tensor(out).detach().float().cpu()
        act = self._output_activation()
        if act == "softmax":  # probabilities -> logits (up to a per-row constant)
            out = out.clamp_min(1e-12).log()
        elif act == "sigmoid":
            out = out.clamp(1e-7, 1 - 1e-7)
            out = out.log() - (-out).log1p()
        return out

    def _recorder(self, layer, capture: dict):
        original = type(layer).call.__get__(layer)
        name = layer.name

        def call(inputs, *args, **kwargs):
            t = torch.as_tensor(inputs)
            record(capture, name, t, layer.axis % t.dim())
            return original(inputs, *args, **kwargs)

        return call

    def running_stats(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            lay.name: (
                _numpy(lay.moving_mean).astype(np.float64),
                _numpy(lay.moving_variance).astype(np.float64),
            )
            for lay in self._bns
            if lay.built
        }

    def set_running_stats(self, stats) -> None:
        for lay in self._bns:
            if lay.name in stats:
                mean, var, _count = stats[lay.name]  # Keras keeps the biased variance
                dtype = _numpy(lay.moving_mean).dtype
                lay.moving_mean.assign(np.asarray(mean, dtype=dtype))
                lay.moving_variance.assign(np.asarray(var, dtype=dtype))

    def gammas(self) -> dict[str, np.ndarray]:
        return {
            lay.name: _numpy(lay.gamma).astype(np.float64)
            for lay in self._bns
            if getattr(lay, "gamma", None) is not None
        }

    def regularization_loss(self) -> float | None:
        with torch.no_grad():
            losses = list(self.model.losses)
        return float(sum(float(_numpy(v)) for v in losses)) if losses else None

    def optimizer_steps(self) -> int | None:
        opt = getattr(self.model, "optimizer", None)
        iterations = getattr(opt, "iterations", None)
        if iterations is None:
            return None
        steps = int(_numpy(iterations))
        return steps or None

    def state(self) -> dict[str, np.ndarray]:
        return {v.path: _numpy(v).copy() for v in self.model.weights}

    def save(self, path: str) -> None:
        self.model.save(path)
