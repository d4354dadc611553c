"""The checks of a parsed spec that need bnlab's registries: the preset (or user model) and
dataset names, and each variant's values (network built on the ``meta`` device, optimizer,
augmentation, ``batch_size >= 2`` under batch normalization). No data, no weights."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from bnlab._validation import did_you_mean
from bnlab.errors import ConfigError, DataError
from bnlab.study import model_table
from bnlab.study.spec_errors import rename_error
from bnlab.study.spec_tables import TrainSpec, Variant

if TYPE_CHECKING:  # the spec calls these checks; this module only reads the spec
    from bnlab.study.spec import StudySpec


def check_names(spec: StudySpec) -> None:
    """The base ``[model]`` source (a known preset, or a user model that exists) and the
    base ``[data]`` table (a known dataset and its options)."""
    from bnlab import models

    presets = models.presets()
    if spec.model.preset is None:
        model_table.check_source(spec.model)
    elif spec.model.preset not in presets:
        raise ConfigError(
            f"model.preset: {spec.model.preset!r} is not a preset"
            f"{did_you_mean(spec.model.preset, presets)}; presets: {', '.join(presets)}"
        )
    check_dataset(spec.data.name, spec.data.options, "data")


def check_dataset(name: str, options: dict[str, Any], path: str) -> None:
    """``name`` is a dataset :mod:`bnlab.data` knows and ``options`` are options it takes.

    ``path`` is the field path of the data table (``data`` or ``variants.NAME.data``). A local
    path that does not exist yet is accepted here (it may be relative to ``--data-dir``); the
    loader reports it at run time.
    """
    from bnlab import data

    try:
        valid = list(data.dataset_options(name))
    except ConfigError as error:
        raise ConfigError(f"{path}.name: {str(error).removeprefix('name: ')}") from None
    except DataError:
        return
    for key in options:
        if key not in valid:
            raise ConfigError(
                f"{path}.{key}: unknown option of dataset {name!r}{did_you_mean(key, valid)}; "
                f"valid options: {', '.join(valid)}"
            )


def check_variant(variant: Variant) -> None:
    """Value checks that need the preset, the optimizer and the augmenter (no data, no weights)."""
    from bnlab import models
    from bnlab.train.augment import Augmenter
    from bnlab.train.evaluation import uses_batch_statistics
    from bnlab.train.optimizers import make_optimizer

    def model_path(key: str) -> str | None:
        if key not in variant.model_options:
            return None
        return variant.sources.get(key, f"model.{key}")

    def train_path(key: str) -> str | None:
        if key not in TrainSpec.model_fields:
            return None
        return variant.sources.get(f"train.{key}", f"train.{key}")

    def optimizer_path(key: str) -> str | None:
        # The optimizer's own options (beta_1, momentum, ...) sit in optimizer_options.
        return train_path(key) or f"{train_path('optimizer_options')}.{key}"

    def augment_path(key: str) -> str | None:
        return train_path(key) if key == "augment" else f"{train_path('augment')}.{key}"

    try:
        if variant.preset.startswith("user:"):  # the user's model: built once, on the CPU
            net = model_table.check_user_variant(variant)
        else:
            with torch.device("meta"):  # checks every option and shape without allocating
                net = models.build(variant.preset, **variant.model_options)
    except ConfigError as error:
        if variant.preset.startswith("user:"):
            raise
        raise ConfigError(
            rename_error(error, model_path, _section_path(variant, "model"))
        ) from None
    train = variant.train
    if train.batch_size < 2 and net is not None and uses_batch_statistics(net):
        raise ConfigError(
            f"{train_path('batch_size')}: {train.batch_size} is too small for variant "
            f"{variant.name!r}, whose network has batch normalization: the statistics of a "
            "batch of one sample are its own values (variance 0); use batch_size >= 2"
        )
    try:
        make_optimizer(
            train.optimizer,
            [torch.nn.Parameter(torch.zeros(1))],
            train.lr,
            **train.optimizer_options,
        )
    except ConfigError as error:
        raise ConfigError(
            rename_error(error, optimizer_path, _section_path(variant, "train"))
        ) from None
    try:
        Augmenter.from_options(train.augment)
    except ConfigError as error:
        raise ConfigError(rename_error(error, augment_path, train_path("augment"))) from None


def _section_path(variant: Variant, section: str) -> str:
    """``variants.NAME`` when the variant overrides something in ``section``, else ``section``."""
    for key, path in variant.sources.items():
        if (section == "model" and "." not in key) or key.startswith(f"{section}."):
            return path.rsplit(".", 1)[0]
    return section
