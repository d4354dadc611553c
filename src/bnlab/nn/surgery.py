"""Model surgery: find BN layers, and swap PyTorch's BatchNorm for bnlab's (and back).

:func:`convert` edits a model in place, keeping every weight and running statistic, so a
PyTorch model can be trained or studied with Keras semantics (``momentum`` as the fraction
kept, biased moving variance, ``trainable=False``), and a bnlab model exported to plain
PyTorch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab._validation import check_choice, did_you_mean
from bnlab.errors import ConfigError
from bnlab.nn.batchnorm import BatchNorm, is_torch_bn


def find_bn_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every batch-norm layer of ``model`` as ``(qualified name, module)``, in module order.

    Counted: :class:`bnlab.BatchNorm` and PyTorch's ``_BatchNorm`` family
    (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, lazy variants). The root module itself has
    the name ``""``. A module shared by several parents is listed once.
    """
    return [
        (name, m) for name, m in model.named_modules() if isinstance(m, (BatchNorm, _BatchNorm))
    ]


def convert(model: nn.Module, to: str = "bnlab", **overrides) -> nn.Module:
    """Replace, in place, every BN layer of ``model`` by its counterpart; return the model.

    ``to="bnlab"``: each ``torch.nn.BatchNorm{1,2,3}d`` becomes
    :meth:`bnlab.BatchNorm.from_torch` of it; ``overrides`` are bnlab constructor arguments
    applied to every new layer, e.g. ``momentum=0.99`` (Keras convention: fraction kept) or
    ``variance="biased"``. Without overrides the model computes exactly what it computed.

    ``to="torch"``: each :class:`bnlab.BatchNorm` becomes :meth:`bnlab.BatchNorm.to_torch`
    of it; the only override is ``cls`` (the torch class to build).

    Weights, running statistics, ``num_batches_tracked``, train/eval flags, devices and
    dtypes are kept; a layer shared by several parents stays shared. Hooks registered on the
    old layers are not carried over. When ``model`` itself is a BN layer the converted layer
    is returned (it cannot be replaced in place).
    """
    check_choice("to", to, ("bnlab", "torch"))
    if to == "torch":
        bad = sorted(set(overrides) - {"cls"})
        if bad:
            raise ConfigError(
                f"{bad[0]}: {overrides[bad[0]]!r} is not an option of convert(to='torch'); "
                "only cls is"
            )

        def wanted(m):
            return isinstance(m, BatchNorm)

        def make(m):
            return m.to_torch(**overrides)
    else:

        def wanted(m):
            return is_torch_bn(m)

        def make(m):
            return BatchNorm.from_torch(m, **overrides)

    if wanted(model):
        return make(model)
    replaced: dict[int, nn.Module] = {}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if child is not None and wanted(child):
                if id(child) not in replaced:
                    replaced[id(child)] = make(child)
                setattr(parent, name, replaced[id(child)])
    return model


# -- BN options on an existing model (studies of a user's own PyTorch module) ---------------
#: The variant keys :func:`apply_bn_options` understands (Keras conventions throughout).
BN_OPTION_KEYS = (
    "bn_momentum",
    "bn_epsilon",
    "norm",
    "insert_bn",
    "bn_renorm",
    "bn_virtual_batch_size",
)
INSERT_POSITIONS = ("after_conv", "after_activation", "before_activation")
#: Hidden-layer activation modules (an output softmax/log-softmax is never a BN site).
ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardswish,
    nn.PReLU,
)
_BLOCKS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
#: Name of the norm a hook inserted by ``insert_bn`` lives under (a child of its site).
INSERTED_NAME = "bnlab_norm"


def apply_bn_options(model: nn.Module, **options) -> nn.Module:
    """Rewrite the BN of ``model`` in place as a study variant asks; return the model.

    ``options`` are the keys of :data:`BN_OPTION_KEYS` (``None`` = leave alone):

    ``bn_momentum``, ``bn_epsilon``
        Keras convention (momentum = fraction of the moving statistics *kept*): one number
        for every BN layer, or ``{qualified_layer_name: value}``. A ``torch.nn.BatchNorm*d``
        keeps its class (its torch momentum becomes ``1 - bn_momentum``).
    ``norm``
        Every BN layer becomes ``bnlab.nn.make_norm(norm, channels, axis=1)`` (same module
        name, fresh parameters of the new kind; ``"batch"`` keeps the layer's statistics and
        settings as a :class:`bnlab.BatchNorm`); ``"none"`` removes it (``nn.Identity``).
    ``insert_bn``
        For a model without BN: a :class:`bnlab.BatchNorm` (Keras defaults) after each
        Conv/Linear block but the last (``"after_conv"``), after each hidden activation
        module (``"after_activation"``) or before it (``"before_activation"``). The new layer
        is a child named ``bnlab_norm`` of the module it follows or precedes, applied by a
        forward hook, so every existing module and tensor keeps its name.
    ``bn_renorm``, ``bn_virtual_batch_size``
        Batch renormalization / ghost batches on every BN layer (converted to
        :class:`bnlab.BatchNorm`; statistics kept).

    Every other module and tensor is untouched. An option that cannot apply raises a
    ConfigError whose message starts with the option's key and names the layer.
    """
    unknown = sorted(set(options) - set(BN_OPTION_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a BN option; options: {', '.join(BN_OPTION_KEYS)}")
    opts = {k: v for k, v in options.items() if v is not None}
    if opts.get("insert_bn") is not None:
        _insert_bn(model, opts.pop("insert_bn"), opts.get("bn_momentum"), opts.get("bn_epsilon"))
        for key in ("bn_momentum", "bn_epsilon"):  # numbers went into the new layers
            if not isinstance(opts.get(key), dict):
                opts.pop(key, None)
    if not opts:
        return model
    layers = find_bn_layers(model)
    if not layers:
        key = next(iter(opts))
        raise ConfigError(
            f"{key}: the model has no BN layer to change (modules: "
            f"{', '.join(n for n, _ in list(model.named_children())[:8]) or 'none'}); "
            "insert_bn adds BN to a model without it"
        )
    names = [n for n, _ in layers]
    norm = opts.pop("norm", None)
    if norm is not None:
        _swap_norm(model, layers, norm)
        if norm != "batch":
            return model
        layers = find_bn_layers(model)
    renorm, vbs = opts.pop("bn_renorm", None), opts.pop("bn_virtual_batch_size", None)
    if renorm is not None or vbs is not None:
        changes = {}
        if renorm is not None:
            changes["renorm"] = _check_bool("bn_renorm", renorm)
        if vbs is not None:
            if isinstance(vbs, bool) or not isinstance(vbs, int) or vbs < 1:
                raise ConfigError(f"bn_virtual_batch_size: {vbs!r} is not an integer >= 1")
            changes["virtual_batch_size"] = vbs
        _replace(model, {name: _rebuilt(m, changes) for name, m in layers})
        layers = find_bn_layers(model)
    for key in ("bn_momentum", "bn_epsilon"):
        if key in opts:
            for name, layer in layers:
                value = _per_layer(key, opts[key], name, names)
                if value is not None:
                    _set_bn_value(layer, key, value, name)
    return model


def _check_bool(key: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not true or false")
    return value


def _per_layer(key: str, value, name: str, names: list[str]):
    """The value of ``key`` for layer ``name`` (a table's unknown names are refused)."""
    if not isinstance(value, dict):
        return value
    for given in value:
        if given not in names:
            raise ConfigError(
                f"{key}: the model has no BN layer {given!r}{did_you_mean(given, names)}; "
                f"BN layers: {', '.join(names)}"
            )
    return value.get(name)


def _set_bn_value(layer: nn.Module, key: str, value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: {value!r} (layer {name!r}) is not a number")
    if key == "bn_momentum":
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{key}: {value!r} (layer {name!r}) is not in [0, 1]")
        if isinstance(layer, BatchNorm):
            layer.momentum = float(value)
        else:  # torch's momentum is the fraction replaced
            layer.momentum = 1.0 - float(value)
    else:
        if not value > 0:
            raise ConfigError(f"{key}: {value!r} (layer {name!r}) is not > 0")
        if isinstance(layer, BatchNorm):
            layer.epsilon = float(value)
        else:
            layer.eps = float(value)


def _channels(layer: nn.Module) -> int:
    n = getattr(layer, "num_features", None)
    if n is None:
        raise ConfigError(f"norm: BN layer {layer!r} is not built (no channel count)")
    return int(n)


def _swap_norm(model: nn.Module, layers, kind: str) -> None:
    from bnlab.nn.registry import make_norm, norm_kinds

    kinds = norm_kinds()
    if kind not in kinds:
        raise ConfigError(
            f"norm: {kind!r} is not a norm kind{did_you_mean(kind, kinds)}; "
            f"kinds: {', '.join(kinds)}"
        )
    new = {}
    for name, layer in layers:
        if kind == "batch":
            new[name] = layer if isinstance(layer, BatchNorm) else BatchNorm.from_torch(layer)
            continue
        try:
            made = make_norm(kind, _channels(layer), axis=1, epsilon=_epsilon(layer))
        except ConfigError as error:
            raise ConfigError(f"norm: {kind!r} cannot replace layer {name!r} ({error})") from None
        ref = next(iter(layer.parameters()), None)
        new[name] = made if ref is None else made.to(ref.device, ref.dtype)
    _replace(model, new)


def _epsilon(layer: nn.Module) -> float:
    return float(layer.epsilon if isinstance(layer, BatchNorm) else layer.eps)


def _rebuilt(layer: nn.Module, changes: dict) -> BatchNorm:
    """``layer`` as a :class:`bnlab.BatchNorm` with ``changes`` (statistics kept)."""
    if not isinstance(layer, BatchNorm):
        return BatchNorm.from_torch(layer, **changes)
    config = layer.get_config()
    trainable = config.pop("trainable", True)
    new = BatchNorm.from_config({**config, **changes, "num_features": layer.num_features})
    new.trainable = trainable
    state = {k: v for k, v in layer.state_dict().items() if k in new.state_dict()}
    new.load_state_dict(state, strict=False)
    if changes.get("renorm") and not layer.renorm:
        with torch.no_grad():  # the renorm averages start from the moving statistics
            new.renorm_mean.copy_(new.moving_mean)
            new.moving_stddev.copy_(new.moving_variance.sqrt())
            new.renorm_stddev.copy_(new.moving_variance.sqrt())
    ref = next(iter(layer.parameters()), None)
    new = new if ref is None else new.to(ref.device, ref.dtype)
    new.train(layer.training)
    return new


def _replace(model: nn.Module, new: dict[str, nn.Module]) -> None:
    """Put ``new[qualified_name]`` where that module is (same name, same parent)."""
    for name, module in new.items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module)


def _after_hook(module: nn.Module, args, output):
    return getattr(module, INSERTED_NAME)(output)


def _before_hook(module: nn.Module, args):
    return (getattr(module, INSERTED_NAME)(args[0]), *args[1:])


def _insert_bn(model: nn.Module, position: str, momentum, epsilon) -> None:
    check_choice("insert_bn", position, INSERT_POSITIONS)
    existing = find_bn_layers(model)
    if existing:
        raise ConfigError(
            f"insert_bn: the model has BN already (layer {existing[0][0]!r}); change it with "
            "bn_momentum / norm, or remove it with norm = 'none'"
        )
    modules = [(n, m) for n, m in model.named_modules() if n]
    blocks = [(i, n, m) for i, (n, m) in enumerate(modules) if isinstance(m, _BLOCKS)]
    if len(blocks) < 2:
        raise ConfigError(
            f"insert_bn: {position!r} needs at least two Conv/Linear layers (the last one is the "
            f"output); the model has {len(blocks)}"
        )
    last_block = blocks[-1][0]
    sites: list[tuple[str, nn.Module, int, bool]] = []  # (name, module, channels, before)
    if position == "after_conv":
        sites = [(n, m, _out_channels(m), False) for i, n, m in blocks if i != last_block]
    else:
        channels = None
        for i, (name, module) in enumerate(modules):
            if isinstance(module, _BLOCKS):
                channels = _out_channels(module)
            elif isinstance(module, ACTIVATIONS) and i < last_block and channels is not None:
                sites.append((name, module, channels, position == "before_activation"))
        if not sites:
            raise ConfigError(
                f"insert_bn: {position!r} finds no activation module between the layers (the "
                "model applies its activations inside forward(), e.g. F.relu, where no layer "
                "can be inserted); use insert_bn = 'after_conv'"
            )
    seen = set()
    for name, module, channels, before in sites:
        if id(module) in seen:
            raise ConfigError(
                f"insert_bn: module {name!r} is used in several places of the model; give each "
                "place its own activation module"
            )
        seen.add(id(module))
        bn_kwargs = {}
        if isinstance(momentum, (int, float)) and not isinstance(momentum, bool):
            bn_kwargs["momentum"] = momentum
        if isinstance(epsilon, (int, float)) and not isinstance(epsilon, bool):
            bn_kwargs["epsilon"] = epsilon
        try:
            norm = BatchNorm(num_features=channels, axis=1, **bn_kwargs)
        except ConfigError as error:
            raise ConfigError(f"insert_bn: layer after {name!r}: {error}") from None
        ref = next(iter(model.parameters()), None)
        module.add_module(INSERTED_NAME, norm if ref is None else norm.to(ref.device, ref.dtype))
        if before:
            module.register_forward_pre_hook(_before_hook)
        else:
            module.register_forward_hook(_after_hook)


def _out_channels(module: nn.Module) -> int:
    return int(module.out_features if isinstance(module, nn.Linear) else module.out_channels)
