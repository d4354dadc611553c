"""Growing a study in place: added seeds/variants reuse every stored run; meaning changes
need new=True and say what changed."""

from __future__ import annotations

import copy

import pytest

from bnlab.errors import ConfigError
from bnlab.study import engines as study_engines
from bnlab.study import load_runs, register_engine, run
from bnlab.study.engines import SequentialEngine

BASE = {
    "name": "grow",
    "question": "Does BN help the circles MLP?",
    "seeds": 2,
    "model": {"preset": "circles_mlp"},
    "data": {"name": "circles"},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": "sgd", "lr": 0.01},
    "variants": {"no_bn": {"norm": "none"}, "bn": {}},
}


class CountingEngine(SequentialEngine):
    """The sequential engine, counting which runs it trains."""

    name = "counting"

    def __init__(self):
        self.trained: list[tuple[str, int]] = []

    def train(self, group, dataset, **kw):
        for request, result in super().train(group, dataset, **kw):
            self.trained.append(request.key)
            yield request, result


@pytest.fixture
def counter():
    engine = CountingEngine()
    register_engine("counting", engine)
    yield engine
    study_engines._REGISTRY.pop("counting")  # the registry refuses a second "counting"


def spec(**changes):
    out = copy.deepcopy(BASE)
    out.update(changes)
    return out


def test_adding_two_seeds_trains_only_the_two_new_seeds_per_variant(tmp_path, counter):
    store = tmp_path / "runs.db"
    first = run(spec(), store=store, engine="counting", progress=False)
    assert first.trained == 4 and len(counter.trained) == 4
    before = load_runs(store).set_index(["variant", "seed"])["run_id"]
    counter.trained.clear()
    grown = run(
        spec(seeds=4, question="Does BN help the circles MLP, with four seeds?"),
        store=store,
        engine="counting",
        progress=False,
    )
    assert sorted(counter.trained) == [("bn", 2), ("bn", 3), ("no_bn", 2), ("no_bn", 3)]
    assert grown.trained == 4 and grown.skipped == 4 and grown.study == "grow"
    after = load_runs(store).set_index(["variant", "seed"])["run_id"]
    assert len(after) == 8
    assert after.loc[before.index].tolist() == before.tolist()  # the stored runs are kept
    assert (grown.summary.set_index("variant")["n"] == 4).all()

    # a new variant trains only its own runs
    counter.trained.clear()
    more = spec(seeds=4, variants={**BASE["variants"], "bn_m080": {"bn_momentum": 0.8}})
    result = run(more, store=store, engine="counting", progress=False)
    assert sorted(counter.trained) == [("bn_m080", s) for s in range(4)]
    assert result.trained == 4 and result.skipped == 8


def test_a_change_that_alters_stored_runs_needs_new_and_names_it(tmp_path, counter):
    store = tmp_path / "runs.db"
    run(spec(), store=store, engine="counting", progress=False)
    with pytest.raises(ConfigError) as info:
        run(spec(train={**BASE["train"], "epochs": 3}), store=store, progress=False)
    message = str(info.value)
    assert "train.epochs 2 -> 3 (every variant)" in message and "--new" in message
    with pytest.raises(ConfigError, match=r"model.bn_momentum added \(variant bn\)"):
        run(spec(variants={"no_bn": {"norm": "none"}, "bn": {"bn_momentum": 0.8}}),
            store=store, progress=False)
    with pytest.raises(ConfigError, match=r"variants.no_bn removed"):
        run(spec(variants={"bn": {}}), store=store, progress=False)
    with pytest.raises(ConfigError, match=r"seeds 1 removed"):
        run(spec(seeds=[0]), store=store, progress=False)
    counter.trained.clear()
    result = run(spec(train={**BASE["train"], "epochs": 3}), store=store, new=True,
                 engine="counting", progress=False)
    assert result.study == "grow@2" and len(counter.trained) == 4
