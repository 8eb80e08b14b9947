"""The whole training state in a sharded checkpoint: DLRM on 2 gloo ranks with two dense
optimizers (TorchRec's KeyedOptimizerWrapper around Adam, plain AdamW with weight decay), LR
schedules, a per-rank user `Stateful` and the RNGs. Saved mid-run, loaded into freshly built
objects; continuing must give exactly what the run that never stopped gives."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.datasets.utils import Batch
from torchrec.distributed import DistributedModelParallel
from torchrec.optim.keyed import KeyedOptimizerWrapper

from tests.builders import dlrm_model, states_equal, stock_plan, tables_of, zipf_kjt
from tests.dist_utils import fork_jobs
from torchrec_hot import CheckpointError, load_checkpoint, save_checkpoint
from torchrec_hot.checkpoint.gathered import logical_optimizer_state, logical_state_dict
from torchrec_hot.checkpoint.training_state import flatten_entries, rebuild_entries

DENSE_IN, BEFORE, AFTER = 5, 4, 3


class Counter:
    """A user `Stateful` whose value differs per rank."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def _objects(seed: int, lr: float):
    """A fresh DMP DLRM (table-wise) with its dense optimizers and schedulers."""
    tables = tables_of([40, 60, 30], 8)
    model = dlrm_model(tables, DENSE_IN)
    dmp = DistributedModelParallel(model, plan=stock_plan(model, tables, "table_wise"),
                                   device=torch.device("cpu"))
    over = {n: p for n, p in dmp.named_parameters() if "over_arch" in n}
    dense_arch = [p for n, p in dmp.named_parameters() if "dense_arch" in n]
    optimizers = {
        "over": KeyedOptimizerWrapper(over, lambda ps: torch.optim.Adam(ps, lr=lr)),
        "dense": torch.optim.AdamW(dense_arch, lr=lr, weight_decay=0.1),
    }
    schedulers = {
        "over": torch.optim.lr_scheduler.StepLR(optimizers["over"], step_size=2, gamma=0.5),
        "dense": torch.optim.lr_scheduler.LinearLR(optimizers["dense"], 0.2, total_iters=5),
    }
    return tables, dmp, optimizers, schedulers


def _train(dmp, tables, optimizers, schedulers, seed: int, rank: int, steps: range) -> None:
    for step in steps:
        rng = np.random.default_rng([seed, step, rank])
        batch = Batch(dense_features=torch.from_numpy(rng.standard_normal((8, DENSE_IN))
                                                      .astype(np.float32)),
                      sparse_features=zipf_kjt(tables, rng),
                      labels=torch.from_numpy(rng.integers(0, 2, 8).astype(np.float32)))
        loss, _ = dmp(batch)
        loss.backward()
        for name, optimizer in optimizers.items():
            optimizer.step()
            optimizer.zero_grad()
            schedulers[name].step()


def _draws() -> list[float]:
    return [float(torch.rand(())), random.random(), float(np.random.rand())]


def _snapshot(dmp, optimizers, schedulers) -> dict:
    over = optimizers["over"].state_dict()
    dense = optimizers["dense"].state_dict()
    return {"weights": logical_state_dict(dmp), "fused": logical_optimizer_state(dmp),
            "over": {k: dict(v) for k, v in over["state"].items()},
            "dense": {k: dict(v) for k, v in dense["state"].items()},
            "lrs": {n: s.get_last_lr() for n, s in schedulers.items()}}


def _resume_worker(rank: int, world: int, seed: int, directory: str) -> dict:
    torch.manual_seed(seed + rank)
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    tables, dmp, optimizers, schedulers = _objects(seed, lr=0.01)
    _train(dmp, tables, optimizers, schedulers, seed, rank, range(BEFORE))
    save_checkpoint(dmp, directory, BEFORE, optimizers=optimizers, lr_schedulers=schedulers,
                    extra={"counter": Counter(100 + rank)}, data_position=2 * BEFORE)
    draws = _draws()
    _train(dmp, tables, optimizers, schedulers, seed, rank, range(BEFORE, BEFORE + AFTER))
    reference = _snapshot(dmp, optimizers, schedulers)

    torch.manual_seed(999)  # other RNG states, other initial dense weights, fresh optimizers
    random.seed(999)
    np.random.seed(999)
    tables, dmp, optimizers, schedulers = _objects(seed + 1, lr=0.5)
    counter = Counter()
    progress = load_checkpoint(dmp, directory, optimizers=optimizers, lr_schedulers=schedulers,
                               extra={"counter": counter})
    resumed_draws = _draws()
    _train(dmp, tables, optimizers, schedulers, seed, rank, range(BEFORE, BEFORE + AFTER))
    try:
        load_checkpoint(dmp, directory, optimizers={"sgd": torch.optim.SGD(
            [p for n, p in dmp.named_parameters() if "over_arch" in n], lr=0.1)})
        missing = None
    except CheckpointError as e:
        missing = str(e)
    return {"reference": reference, "resumed": _snapshot(dmp, optimizers, schedulers),
            "draws": draws, "resumed_draws": resumed_draws, "progress": progress,
            "counter": counter.value, "missing": missing}


@pytest.mark.multiprocess
def test_resumed_training_state_continues_bit_for_bit(tmp_path: Path):
    seed = int(np.random.default_rng().integers(2**20))
    ranks = fork_jobs([(_resume_worker, (seed, str(tmp_path / "ckpt")))], tmp_path)
    assert [code for _, code, _ in ranks] == [0, 0]
    for rank, (_, _, r) in enumerate(ranks):
        ref, got = r["reference"], r["resumed"]
        assert ref["over"] and ref["dense"]  # Adam moments exist
        for part in ("weights", "fused", "over", "dense", "lrs"):
            assert states_equal(ref[part], got[part]), part
        assert r["draws"] == r["resumed_draws"]
        p = r["progress"]
        assert (p.step, p.data_position, p.saved_world_size, p.rng_restored) == (
            BEFORE, 2 * BEFORE, 2, True)
        assert r["counter"] == 100 + rank
        assert r["missing"] is not None and "dense_optim/sgd" in r["missing"]


def test_flattened_entries_rebuild_nested_state():
    """What DCP gets is flat (no dicts or lists left for its own flattening, empty ones
    included: SGD without momentum has the state {}) and rebuilds to the original."""
    t = torch.arange(3.0)
    entries = {"opt": {"state": {}, "param_groups": [{"params": ["a.w"], "lr": 0.1,
                                                       "betas": (0.9, 0.99)}],
                       "by_index": {0: {"m": t}}},
               "sched": {"_last_lr": [0.5], "_milestones": []}, "x": np.arange(2)}
    flat = flatten_entries(entries)
    assert not any(isinstance(v, (dict, list)) for v in flat.values())
    assert flat["opt/by_index/0/m"] is t and flat["opt/param_groups/0/params/0"] == "a.w"
    rebuilt = rebuild_entries(entries, {k: v for k, v in flat.items()})
    assert states_equal({k: v for k, v in rebuilt.items() if k != "x"},
                  {k: v for k, v in entries.items() if k != "x"})
    assert np.array_equal(rebuilt["x"], entries["x"])
