"""A rank SIGKILLed at each phase of a sharded save (writing shards, after its shards before the
publish, between the step directory's rename and LATEST, right after LATEST): the other rank
raises CheckpointError naming the step and itself (the process group times out after 60 s, so
none waits longer), LATEST names a checkpoint that loads with the weights it was saved with, and
the next save leaves no temporary files. Four 2-rank jobs run side by side, forked from this
process (no re-import of torch per rank), with a 60 s collective timeout."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributed.checkpoint.filesystem import FileSystemWriter
from torchrec.distributed import DistributedModelParallel

from tests.builders import ebc_model, random_weights, stock_plan, tables_of, train_steps
from tests.dist_utils import fork_jobs
from torchrec_hot import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    load_logical_state_dict,
    logical_state_dict,
    save_checkpoint,
)
from torchrec_hot.checkpoint import files

# phase -> the rank that dies
PHASES = {"writing shards": 1, "shards written": 1, "renamed, not published": 0,
          "published": 0}


def _dmp(seed: int):
    tables = tables_of([30, 50], 4)
    model = ebc_model(tables, "rowwise_adagrad")
    dmp = DistributedModelParallel(model, plan=stock_plan(model, tables, "table_wise"),
                                   device=torch.device("cpu"))
    load_logical_state_dict(dmp, random_weights(tables, np.random.default_rng(seed)))
    return tables, dmp


def _die(*_args, **_kwargs) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(phase: str) -> None:
    """Makes this process kill itself at `phase` of the next save."""
    if phase == "writing shards":
        FileSystemWriter.write_data = _die  # type: ignore[method-assign]
    elif phase == "shards written":
        real_save = torch.distributed.checkpoint.save

        def save_then_die(*args, **kwargs):
            real_save(*args, **kwargs)
            _die()

        torch.distributed.checkpoint.save = save_then_die
    else:
        real_publish = files.publish

        def publish(root, name):
            if phase == "published":
                real_publish(root, name)
            _die()

        files.publish = publish


def _save_with_a_death(rank: int, world: int, seed: int, directory: str, phase: str) -> dict:
    tables, dmp = _dmp(seed)
    train_steps(dmp, tables, seed, rank, steps=2)
    saved = {10: logical_state_dict(dmp)}
    save_checkpoint(dmp, directory, 10, keep=1)
    train_steps(dmp, tables, seed + 1, rank, steps=2)
    saved[20] = logical_state_dict(dmp)
    if rank == PHASES[phase]:
        _arm(phase)
    try:
        save_checkpoint(dmp, directory, 20, keep=1)
        error = None
    except CheckpointError as e:
        error = str(e)
    return {"error": error, "saved": saved}


def _reload(rank: int, world: int, seed: int, directories: list[str]) -> dict:
    out = {}
    for directory in directories:
        _, dmp = _dmp(seed + 7)
        latest = latest_checkpoint(directory)
        step = load_checkpoint(dmp, directory).step
        out[directory] = {"latest": latest, "step": step, "weights": logical_state_dict(dmp)}
        save_checkpoint(dmp, directory, 30, keep=1)
    return out


@pytest.mark.multiprocess
def test_rank_killed_at_each_phase_of_a_save(tmp_path: Path):
    seed = int(np.random.default_rng().integers(2**20))
    dirs = {phase: tmp_path / f"ckpt{i}" for i, phase in enumerate(PHASES)}
    jobs = [(_save_with_a_death, (seed, str(d), phase)) for phase, d in dirs.items()]
    results = {}
    for (j, code, result), rank in zip(fork_jobs(jobs, tmp_path), [0, 1] * len(PHASES),
                                       strict=True):
        phase = list(PHASES)[j]
        if rank == PHASES[phase]:
            assert code == -signal.SIGKILL, phase
            continue
        assert code == 0, phase
        results[phase] = result
        error = result["error"]
        assert error is not None, f"{phase}: the save did not fail on rank {rank}"
        assert f"rank {rank}:" in error and "step 20" in error, error
    leftovers = {phase: files.leftovers(d) for phase, d in dirs.items()}
    assert leftovers["shards written"], "the dead save left nothing to clean up"

    (_, code, reloaded), _ = fork_jobs([(_reload, (seed, [str(d) for d in dirs.values()]))],
                                        tmp_path)
    assert code == 0
    for phase, d in dirs.items():
        expected = 20 if phase == "published" else 10
        r = reloaded[str(d)]
        assert r["latest"] == d / f"step_{expected:08d}" and r["step"] == expected, phase
        saved = results[phase]["saved"][expected]
        assert all(torch.equal(saved[k], r["weights"][k]) for k in saved), phase
        assert sorted(p.name for p in d.iterdir()) == ["LATEST", "step_00000030"], phase
