"""A torchrun entry point for tests/test_elastic.py: 2-rank gloo DMP over a hot/cold EBC; rank 1's
second batch holds an id outside its table on every attempt. Appends "<restart count> <rank>" to
the file $ATTEMPTS_FILE per start; `--no-restart-on` wraps training in `no_restart_on()`."""

from __future__ import annotations

import contextlib
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel

from tests.builders import ebc_model, hot_plan, zipf_kjt, zipf_profile
from torchrec_hot import apply_hot_plan, no_restart_on


def train(seed: int) -> None:
    rank = dist.get_rank()
    rng = np.random.default_rng(seed)
    tables = [EmbeddingBagConfig(name=f"t{i}", num_embeddings=int(rng.integers(50, 200)),
                                 embedding_dim=8, feature_names=[f"f{i}"]) for i in range(2)]
    plan, sharding = hot_plan(tables, zipf_profile(tables, seed))
    dmp = DistributedModelParallel(apply_hot_plan(ebc_model(tables, "sgd"), plan), plan=sharding,
                                   device=torch.device("cpu"))
    for step in range(3):
        kjt = zipf_kjt(tables, np.random.default_rng([seed, step, rank]))
        if step == 1 and rank == 1:
            values = kjt.values().clone()
            values[-1] = tables[-1].num_embeddings + 5
            kjt = KeyedJaggedTensor.from_lengths_sync(kjt.keys(), values, kjt.lengths())
        dmp(kjt).values().sum().backward()


def main() -> None:
    torch.set_num_threads(1)
    with open(os.environ["ATTEMPTS_FILE"], "a") as f:
        f.write(f"{os.environ['TORCHELASTIC_RESTART_COUNT']} {os.environ['RANK']}\n")
    dist.init_process_group("gloo")
    guard = no_restart_on() if "--no-restart-on" in sys.argv else contextlib.nullcontext()
    with guard:
        train(int(sys.argv[1]))


if __name__ == "__main__":
    main()
