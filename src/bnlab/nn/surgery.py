"""Model surgery: find BN layers, and swap PyTorch's BatchNorm for bnlab's (and back).

:func:`convert` edits a model in place, keeping every weight and running statistic, so a
PyTorch model can be trained or studied with Keras semantics (``momentum`` as the fraction
kept, biased moving variance, ``trainable=False``), and a bnlab model exported to plain
PyTorch.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlab._validation import check_choice
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
