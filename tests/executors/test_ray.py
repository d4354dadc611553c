"""The Ray executor against a local Ray instance (loopback only, 2 CPUs).

1. A small study run with ``executor="ray"`` stores the same rows as with the local executor.
2. A worker that dies mid-run is retried by Ray and its run finishes; a variant that always
   raises is recorded as ``failed`` after the retries, while the other runs finish.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install bnlab[ray])")

from bnlab import study  # noqa: E402
from bnlab.study.engines import SequentialEngine, register_engine  # noqa: E402

SPEC = {
    "name": "ray-small",
    "question": "Does the Ray executor store what the local one stores?",
    "model": {"preset": "circles_mlp"},
    "data": {"name": "circles"},
    "train": {"epochs": 2, "batch_size": 32, "optimizer": "sgd", "lr": 0.01,
              "optimizer_options": {"momentum": 0.9}},
    "seeds": 2,
    "variants": {"no_bn": {"norm": "none"}, "bn": {"norm": "batch"}},
}


@pytest.fixture(scope="module")
def local_ray():
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False,
        _node_ip_address="127.0.0.1",
        # The flaky engine below is defined in this test module: ship it by value.
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
    )
    # Ray pickles tasks with its own copy of cloudpickle; the registration must go there.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


def _metric_rows(store: Path):
    frame = study.load(store).sort_values(["variant", "seed", "epoch"]).reset_index(drop=True)
    keys = frame[["variant", "seed", "epoch", "status"]]
    numbers = frame[["loss", "accuracy", "val_loss", "val_accuracy", "train_eval_accuracy"]]
    return keys, numbers.to_numpy(dtype=float)


def test_ray_rows_equal_local_rows(tmp_path, local_ray):
    study.run(SPEC, store=tmp_path / "local.db", executor="local", engine="sequential",
              progress=False)
    study.run(SPEC, store=tmp_path / "ray.db", executor="ray", engine="sequential",
              progress=False)
    local_keys, local_numbers = _metric_rows(tmp_path / "local.db")
    ray_keys, ray_numbers = _metric_rows(tmp_path / "ray.db")
    assert len(local_keys) == 2 * 2 * 2
    assert local_keys.equals(ray_keys)
    # Same seeds, same CPU kernels: the numbers agree to float32 round-off (worker processes
    # may use another thread count, which can reorder a reduction).
    np.testing.assert_allclose(ray_numbers, local_numbers, rtol=1e-5, atol=1e-6)
    runs = study.load_runs(tmp_path / "ray.db")
    assert set(runs["status"]) == {"finished"}


class FlakyEngine(SequentialEngine):
    """Kills its worker process the first time it trains variant ``flaky``; always raises for
    variant ``broken``. Every attempt is logged as a line in ``log`` (shared by the processes)."""

    name = "flaky"

    def __init__(self, log: str):
        self.log = log

    def train(self, group, dataset, *, device, on_epoch_end=None):
        for request in group:
            with open(self.log, "a") as f:
                f.write(f"{request.variant} {request.seed}\n")
            attempts = Path(self.log).read_text().splitlines().count(
                f"{request.variant} {request.seed}")
            if request.variant == "flaky" and attempts == 1:
                os._exit(1)  # the worker dies mid-run, as on a lost node
            if request.variant == "broken":
                yield request, RuntimeError("permanent failure in this variant")
                continue
            yield from super().train([request], dataset, device=device, on_epoch_end=on_epoch_end)


def test_ray_retries_a_dead_worker_and_records_a_failing_variant(tmp_path, local_ray):
    log = tmp_path / "attempts.log"
    register_engine("flaky", FlakyEngine(str(log)))
    spec = dict(SPEC, name="ray-faults", seeds=1,
                variants={"ok": {"norm": "batch"}, "flaky": {"norm": "batch"},
                          "broken": {"norm": "batch"}})
    study.run(spec, store=tmp_path / "faults.db", executor="ray", engine="flaky",
              executor_options={"max_retries": 2}, progress=False)

    attempts = log.read_text().splitlines()
    assert attempts.count("ok 0") == 1
    assert attempts.count("flaky 0") == 2          # died once, retried once
    assert attempts.count("broken 0") == 3         # first try + max_retries
    runs = study.load_runs(tmp_path / "faults.db").set_index("variant")
    assert runs.loc["ok", "status"] == "finished"
    assert runs.loc["flaky", "status"] == "finished"
    assert runs.loc["broken", "status"] == "failed"
    assert "permanent failure" in runs.loc["broken", "error"]
    assert "3 tries" in runs.loc["broken", "error"]
    # The finished runs have their epochs; the failed one has none.
    frame = study.load(tmp_path / "faults.db")
    assert set(frame.loc[frame["status"] == "finished", "epoch"]) == {1, 2}
