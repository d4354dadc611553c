"""Study specs: the TOML layout, variants and grids, built-in studies, and one-line errors."""

from __future__ import annotations

import copy

import pytest

from bnlab.errors import ConfigError, DataError
from bnlab.study import builtin_studies, load_spec

BASE = {
    "name": "toy",
    "question": "Does BN help the circles MLP?",
    "seeds": 2,
    "model": {"preset": "circles_mlp"},
    "data": {"name": "circles"},
    "train": {
        "epochs": 2,
        "batch_size": 32,
        "optimizer": "sgd",
        "lr": 0.01,
        "optimizer_options": {"momentum": 0.9},
    },
    "variants": {"no_bn": {"norm": "none"}, "bn": {}},
}


def spec_with(**changes):
    """BASE with dotted-path changes; a value of ``...`` deletes the key."""
    spec = copy.deepcopy(BASE)
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        if value is ...:
            del node[last]
        else:
            node[last] = value
    return spec


# (case, spec, the field path the message must start with, text it must contain)
MALFORMED = [
    ("wrong type", spec_with(train__epochs="ten"), "train.epochs:", "'ten' is not an integer"),
    (
        "out of range",
        spec_with(variants__bn__bn_momentum=1.5),
        "variants.bn.bn_momentum:",
        "1.5 is not in [0, 1]",
    ),
    ("unknown key", spec_with(trian={"epochs": 3}), "trian:", "did you mean 'train'?"),
    (
        "unknown preset",
        spec_with(model__preset="circles_mpl"),
        "model.preset:",
        "did you mean 'circles_mlp'?",
    ),
    ("unknown dataset", spec_with(data__name="circels"), "data.name:", "did you mean 'circles'?"),
    ("empty variants", spec_with(variants={}), "variants:", "empty"),
    ("zero seeds", spec_with(seeds=0), "seeds:", "0 is not a count >= 1"),
    ("batch size 0", spec_with(train__batch_size=0), "train.batch_size:", "0 is not >= 1"),
    (
        "batch size 1 with BN",
        spec_with(train__batch_size=1),
        "train.batch_size:",
        "1 is too small for variant 'bn'",
    ),
    ("epochs missing", spec_with(train__epochs=...), "train.epochs:", "missing"),
]


@pytest.mark.parametrize("case,spec,path,text", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_specs_give_one_line_naming_the_field(case, spec, path, text):
    with pytest.raises(ConfigError) as info:
        load_spec(spec)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(path), message
    assert text in message, message


@pytest.mark.parametrize(
    "changes,path,text",
    [
        (
            dict(variants__bn__bn_momentun=0.8),
            "variants.bn.bn_momentun:",
            "did you mean 'bn_momentum'?",
        ),
        (dict(model__dropuot=0.1), "model.dropuot:", "unknown option of preset 'circles_mlp'"),
        (dict(train__optimizer="adma"), "train.optimizer:", "did you mean 'adam'?"),
        (dict(train__optimizer_options={"momentun": 0.9}), "train.optimizer_options", "momentun"),
        (dict(train__augment={"rotation": -5}), "train.augment.rotation:", "-5"),
        (dict(train__lr=0), "train.lr:", "0 is not > 0"),
        (dict(target_accuracy=80), "target_accuracy:", "80 is not <= 1"),
        (dict(baseline="nobn"), "baseline:", "did you mean 'no_bn'?"),
        (dict(seeds=[1, 1]), "seeds:", "repeats a seed"),
        (dict(name="my study"), "name:", "'my study'"),
        (dict(variants__bn=3), "variants.bn:", "3 is not a table"),
        (dict(variants=..., grid={"l2": []}), "grid.l2:", "non-empty list"),
        (dict(variants__bn__batch_size=1), "variants.bn.batch_size:", "1 is too small"),
        (dict(variants__bn__data={"name": "circels"}), "variants.bn.data.name:", "circles"),
        (dict(train__class_weight="balancd"), "train.class_weight:", "'balancd'"),
        (dict(model=...), "model:", "missing"),
    ],
)
def test_more_errors_name_their_field(changes, path, text):
    with pytest.raises(ConfigError) as info:
        load_spec(spec_with(**changes))
    message = str(info.value)
    assert "\n" not in message and message.startswith(path) and text in message, message


def test_valid_spec_resolves_variants_and_defaults():
    spec = load_spec(
        spec_with(
            variants__bn__bn_momentum=0.8, variants__bn__epochs=3, variants__bn__data={"noise": 0.2}
        )
    )
    assert spec.variant_names == ["no_bn", "bn"]
    assert spec.baseline_name == "no_bn" and spec.seeds == [0, 1]
    no_bn, bn = spec.expand()
    assert no_bn.model_options == {"norm": "none"} and no_bn.train.epochs == 2
    assert bn.model_options == {"bn_momentum": 0.8} and bn.train.epochs == 3
    assert bn.data_options == {"noise": 0.2} and bn.data_key != no_bn.data_key
    assert bn.sources["train.epochs"] == "variants.bn.epochs"
    assert spec.runs() == [("no_bn", 0), ("no_bn", 1), ("bn", 0), ("bn", 1)]
    stored = spec.to_dict()
    assert stored["train"]["batch_size"] == 32 and stored["model"] == {"preset": "circles_mlp"}
    assert load_spec(stored).to_dict() == stored  # the stored form reloads unchanged


def test_grid_alone_and_crossed_with_variants():
    grid_only = load_spec(
        spec_with(variants=..., grid={"bn_momentum": [0.99, 0.8], "l2": [0.0, 0.01]})
    )
    assert grid_only.variant_names == [
        "bn_momentum=0.99,l2=0",
        "bn_momentum=0.99,l2=0.01",
        "bn_momentum=0.8,l2=0",
        "bn_momentum=0.8,l2=0.01",
    ]
    v = grid_only.expand()[3]
    assert v.model_options == {"bn_momentum": 0.8, "l2": 0.01}
    assert v.sources["l2"] == "grid.l2"
    crossed = load_spec(spec_with(grid={"epochs": [2, 4]}))
    assert crossed.variant_names == [
        "no_bn,epochs=2",
        "no_bn,epochs=4",
        "bn,epochs=2",
        "bn,epochs=4",
    ]
    assert [v.train.epochs for v in crossed.expand()] == [2, 4, 2, 4]
    with pytest.raises(ConfigError, match=r"^grid.bn_momentum: 1.5 is not in \[0, 1\]"):
        load_spec(spec_with(variants=..., grid={"bn_momentum": [0.9, 1.5]}))


def test_toml_file_and_builtin_names(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "filed"\nseeds = [3, 5]\n[model]\npreset = "circles_mlp"\n[data]\nname = "circles"\n'
        '[train]\nepochs = 1\n[variants.no_bn]\nnorm = "none"\n[variants.bn_m080]\nbn_momentum = 0.8\n'
    )
    spec = load_spec(path)
    assert (
        spec.name == "filed" and spec.seeds == [3, 5] and spec.variant_names == ["no_bn", "bn_m080"]
    )
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_spec(path)
    with pytest.raises(DataError, match="does not exist"):
        load_spec(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="did you mean 'seed004'"):
        load_spec("seed040")


def test_every_builtin_study_is_valid():
    names = [name for name, _ in builtin_studies()]
    assert names == ["demo", "seed000", "seed001", "seed002", "seed003", "seed004"]
    for name, question in builtin_studies():
        spec = load_spec(name)
        assert spec.name == name and question.endswith("?") and len(spec.variant_names) >= 2
    demo = load_spec("demo")
    assert demo.variant_names == ["no_bn", "bn_m099", "bn_m080"] and len(demo.seeds) >= 5
    assert demo.data.options["scale"] == "raw" and demo.train.epochs == 10
    assert demo.train.batch_size == 32
    seed002 = load_spec("seed002")
    assert (seed002.train.epochs, seed002.train.batch_size, len(seed002.seeds)) == (100, 64, 10)
    assert seed002.target_accuracy == 0.8 and seed002.train.precise_eval
    seed004 = load_spec("seed004")
    assert [v.model_options for v in seed004.expand()] == [
        {"norm": "none"},
        {"bn_position": "after_activation"},
        {"bn_position": "before_activation"},
    ]
    assert len(seed004.seeds) == 20 and seed004.train.optimizer_options == {"momentum": 0.9}
    seed003 = load_spec("seed003")
    assert (
        seed003.data.options["validation_split"] == 0.2 and seed003.data.options["split_seed"] == 42
    )
    assert seed003.train.augment == {
        "rotation": 15,
        "hflip": True,
        "width_shift": 0.1,
        "height_shift": 0.1,
    }
