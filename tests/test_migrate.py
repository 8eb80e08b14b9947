"""Re-planning a running 2-rank DMP job: rows migrate every 10 steps between hot and cold
tables, and training ends bit-identical to a run that never migrates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.distributed import DistributedModelParallel

from tests.builders import (
    CUDA_TW_HOT_RW_COLD,
    ebc_model,
    hot_plan,
    random_tables,
    random_weights,
    train_steps,
    zipf_profile,
)
from tests.dist_utils import run_on_ranks
from torchrec_hot import apply_hot_plan
from torchrec_hot.checkpoint.gathered import (
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)
from torchrec_hot.runtime.migrate import replan
from torchrec_hot.runtime.rehot import rehot_plan

STEPS, EVERY = 30, 10


def _run(rank: int, seed: int, tables, weights, migrate: bool) -> dict:
    plan, sharding_plan = hot_plan(tables, zipf_profile(tables, seed), CUDA_TW_HOT_RW_COLD)
    dmp = DistributedModelParallel(apply_hot_plan(ebc_model(tables, "rowwise_adagrad"), plan),
                                   plan=sharding_plan, device=torch.device("cpu"))
    load_logical_state_dict(dmp, weights)
    moved, current = [], plan

    def migrate_every(step: int) -> None:
        nonlocal current
        if migrate and step and step % EVERY == 0:
            # popularity "drifts": the next hot rows come from another Zipf permutation
            current = rehot_plan(current, zipf_profile(tables, seed + step, num_batches=2))
            report = replan(dmp, current)
            moved.append(sum(report.rows_moved.values()))

    train_steps(dmp, tables, seed, rank, steps=STEPS, before_step=migrate_every)
    return {"weights": logical_state_dict(dmp), "optim": logical_optimizer_state(dmp),
            "moved": moved}


def _worker(rank: int, world: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, 3])
    tables = random_tables(rng)
    weights = random_weights(tables, rng)
    still = _run(rank, seed, tables, weights, migrate=False)
    moving = _run(rank, seed, tables, weights, migrate=True)
    return {
        "moved": moving["moved"],
        "weights_equal": all(torch.equal(still["weights"][k], moving["weights"][k])
                             for k in still["weights"]),
        "optim_equal": sorted(still["optim"]) == sorted(moving["optim"]) and all(
            torch.equal(still["optim"][k][n], moving["optim"][k][n])
            for k in still["optim"] for n in still["optim"][k]),
    }


@pytest.mark.multiprocess
def test_migrating_every_10_steps_is_bit_identical_to_never_migrating():
    seed = int(np.random.default_rng().integers(2**20))
    print(f"seed {seed}")  # shown by pytest when the test fails
    for r in run_on_ranks(_worker, 2, seed):
        assert len(r["moved"]) == STEPS // EVERY - 1 and all(m > 0 for m in r["moved"]), r
        assert r["weights_equal"], seed
        assert r["optim_equal"], seed
