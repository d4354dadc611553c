"""The ``[model]`` table of a study spec: a preset, or the user's own model.

Exactly one of::

    preset = "fashion_cnn"                      # bnlab list presets
    factory = "mynets.py:build"                 # or "mypkg.nets:build": returns a torch.nn.Module
    keras = "model.keras"                       # a saved Keras 3 model (safe_mode=True)
    keras_factory = "train.py:create_model"     # returns a Keras model

plus options: a preset's options, or keyword arguments of the factory (passed when the
callable accepts them), or the BN options of :data:`bnlab.nn.surgery.BN_OPTION_KEYS`, which
rewrite the built model. ``reinitialize = true`` (the default; ``keras`` only) draws fresh
weights per seed with the layers' own initializers; ``false`` starts from the saved weights.
Relative paths resolve against the folder of the TOML file (:func:`resolve_model_paths`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from bnlab.errors import ConfigError

SOURCES = ("preset", "factory", "keras", "keras_factory")


class ModelSpec(BaseModel):
    """The ``[model]`` table: exactly one of ``preset``, ``factory``, ``keras`` or
    ``keras_factory``, plus options (the preset's options, the factory's keyword arguments,
    or BN options that rewrite the built model); ``reinitialize`` goes with ``keras`` only.

    See the module docstring for each source's form and how relative paths resolve.
    """

    model_config = ConfigDict(extra="allow", strict=True)
    preset: str | None = Field(None, description="a built-in network (bnlab list presets)")
    factory: str | None = Field(
        None, description='"file.py:name" or "pkg.mod:name" returning a torch.nn.Module'
    )
    keras: str | None = Field(None, description="a saved Keras 3 model file (.keras)")
    keras_factory: str | None = Field(
        None, description='"file.py:name" or "pkg.mod:name" returning a Keras model'
    )
    reinitialize: bool | None = Field(
        None,
        description="keras only: fresh weights per seed (true, the default) or the saved ones",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        given = [k for k in SOURCES if getattr(self, k) is not None]
        if len(given) != 1:
            what = "none" if not given else " and ".join(given)
            raise PydanticCustomError(
                "bnlab",
                f"give exactly one of preset, factory, keras, keras_factory (got {what}); e.g. "
                'preset = "fashion_cnn" or factory = "mynets.py:build"',
            )
        if self.reinitialize is not None and self.keras is None:
            raise PydanticCustomError("bnlab", "reinitialize applies to keras = 'model.keras' only")
        return self

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @property
    def kind(self) -> str:
        return next(k for k in SOURCES if getattr(self, k) is not None)

    @property
    def descriptor(self) -> str:
        """The preset name, or the user model's descriptor (:mod:`bnlab.models.user`)."""
        if self.preset is not None:
            return self.preset
        from bnlab.models.user import descriptor

        reinit = True if self.reinitialize is None else self.reinitialize
        return descriptor(self.kind, getattr(self, self.kind), reinit)

    @property
    def label(self) -> str:
        """How messages name the model: ``preset 'x'`` style text without the kind."""
        return repr(getattr(self, self.kind))

    def table(self) -> dict[str, Any]:
        """The table as written (defaults filled in), for the store."""
        out: dict[str, Any] = {self.kind: getattr(self, self.kind)}
        if self.keras is not None:
            out["reinitialize"] = True if self.reinitialize is None else self.reinitialize
        return {**out, **self.options}


def resolve_model_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``raw`` with the ``[model]`` file paths made absolute against ``base`` (the TOML's
    folder); ``pkg.mod:build`` names stay as they are."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return raw
    model = dict(model)
    for key in ("factory", "keras_factory", "keras"):
        value = model.get(key)
        if not isinstance(value, str):
            continue
        file, sep, attr = value.rpartition(":") if key != "keras" else (value, "", "")
        if key != "keras" and not sep:
            continue  # not module:attr; the loader says so
        if key == "keras" or file.endswith(".py"):
            path = Path(file)
            if not path.is_absolute():
                path = (base / path).resolve()
            model[key] = f"{path}{sep}{attr}"
    return {**raw, "model": model}


def base_dir(source: Any) -> Path:
    """The folder relative model paths of ``source`` (dict, TOML path, built-in) resolve in."""
    if isinstance(source, dict):
        return Path.cwd()
    path = Path(source)
    if path.is_file():
        return path.resolve().parent
    from bnlab.study.spec_sources import builtin_dir

    return builtin_dir()


def check_source(model: ModelSpec) -> None:
    """A user model's file and callable exist (one-line errors naming the field)."""
    from bnlab.errors import DataError
    from bnlab.loading import import_callable

    field = f"model.{model.kind}"
    value = getattr(model, model.kind)
    if model.kind == "keras":
        if not Path(value).is_file():
            raise DataError(f"{field}: no such file: {value!r}")
        return
    import_callable(value, field)


def option_names(name: str) -> list[str] | None:
    """The options a variant may set for preset/descriptor ``name`` (None: any key)."""
    from bnlab import models
    from bnlab.models.user import is_user_model, option_keys

    if not is_user_model(name):
        return list(models.preset_options(name))
    keys, takes_any = option_keys(name)
    return None if takes_any else keys


def check_user_variant(variant) -> Any:
    """Build the variant's model once (seed 0, on the CPU), so a callable that raises, a
    returned object that is not a model, or BN surgery that cannot apply is refused before
    any training. Returns a torch module that represents the network (None on the Keras
    path, where the Keras model has no torch twin)."""
    from bnlab.models.user import build_user_model
    from bnlab.train.seeding import seeded

    try:
        with seeded(0):
            built = build_user_model(variant.preset, variant.model_options, seed=0)
    except ConfigError as error:
        text = str(error)
        if not text.startswith("model"):
            key, _, rest = text.partition(":")
            where = variant.sources.get(key, f"model.{key}")
            text = f"{where}:{rest} (variant {variant.name!r})"
        raise ConfigError(text) from None
    return built.module


def describe(name: str) -> str:
    """``preset 'x'`` or ``factory 'nets.py:build'`` (for messages)."""
    from bnlab.models.user import is_user_model, label

    return label(name) if is_user_model(name) else f"preset {name!r}"
