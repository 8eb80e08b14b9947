"""Sharded checkpoints: save under plan A (2 ranks), load under plan B (2 ranks) and under stock
TorchRec (1 rank); identical logical weights and optimizer state. Atomic saves; bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner

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
from torchrec_hot import apply_hot_plan, make_topology
from torchrec_hot.checkpoint import files
from torchrec_hot.checkpoint.gathered import (
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)
from torchrec_hot.checkpoint.sharded import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

CPU = torch.device("cpu")


def _setup(seed: int):
    rng = np.random.default_rng([seed, 1])
    tables = random_tables(rng)
    return tables, random_weights(tables, rng), zipf_profile(tables, seed)


def _hot_dmp(tables, profile, plan_name: str):
    if plan_name == "A":  # a CUDA plan run on CPU: hot table-wise, cold row-wise
        plan, sharding = hot_plan(tables, profile, CUDA_TW_HOT_RW_COLD)
    else:  # plan B: another budget (other hot rows), table-wise on CPU
        plan, sharding = hot_plan(tables, profile, budget=8 * 1024)
    model = apply_hot_plan(ebc_model(tables, "rowwise_adagrad"), plan)
    return DistributedModelParallel(model, plan=sharding, device=CPU), plan


def _state(dmp) -> tuple[dict, dict]:
    return logical_state_dict(dmp), logical_optimizer_state(dmp)


def _save_under_a(rank: int, world: int, seed: int, directory: str) -> dict:
    tables, weights, profile = _setup(seed)
    dmp, plan = _hot_dmp(tables, profile, "A")
    load_logical_state_dict(dmp, weights)
    train_steps(dmp, tables, seed, rank)
    save_checkpoint(dmp, directory, step=20)
    w, o = _state(dmp)
    return {"weights": w, "optim": o, "hot": {t.name: t.hot_ids for t in plan.tables}}


def _load_under_b(rank: int, world: int, seed: int, directory: str) -> dict:
    tables, _, profile = _setup(seed)
    dmp, plan = _hot_dmp(tables, profile, "B")
    step = load_checkpoint(dmp, directory).step
    w, o = _state(dmp)
    return {"step": step, "weights": w, "optim": o,
            "hot": {t.name: t.hot_ids for t in plan.tables}}


def _load_stock_world_1(rank: int, world: int, seed: int, directory: str, bad: str) -> dict:
    tables, _, _ = _setup(seed)
    model = ebc_model(tables, "rowwise_adagrad")
    plan = EmbeddingShardingPlanner(topology=make_topology(1, "cpu"), batch_size=8).plan(
        model, [EmbeddingBagCollectionSharder()])
    dmp = DistributedModelParallel(model, plan=plan, device=CPU)
    step = load_checkpoint(dmp, directory).step
    w, o = _state(dmp)
    try:
        load_checkpoint(dmp, bad)
        error = None
    except CheckpointError as e:
        error = str(e)
    return {"step": step, "weights": w, "optim": o, "bad_error": error}


def _equal(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def _equal_optim(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(_equal(a[k], b[k]) for k in a)


@pytest.mark.multiprocess
def test_checkpoint_moves_between_plans_world_sizes_and_stock(tmp_path: Path):
    seed = int(np.random.default_rng().integers(2**31))
    directory = tmp_path / "ckpt"
    (directory / ".step_00000007.tmp").mkdir(parents=True)  # left by a save that crashed
    (directory / ".step_00000007.tmp" / "0_0.distcp").write_bytes(b"half")
    (directory / "LATEST.tmp").write_text("step_000")
    saved = run_on_ranks(_save_under_a, 2, seed, str(directory))[0]
    assert sorted(p.name for p in directory.iterdir()) == ["LATEST", "step_00000020"]
    assert any(saved["optim"][k] for k in saved["optim"])  # row-wise Adagrad state exists
    assert (directory / "LATEST").read_text() == "step_00000020"

    # a save that died part-way: its temporary directory has data but no metadata
    partial = directory / ".step_00000030.tmp"
    shutil.copytree(directory / "step_00000020", partial)
    (partial / ".metadata").unlink()
    assert latest_checkpoint(directory) == directory / "step_00000020"

    loaded_b = run_on_ranks(_load_under_b, 2, seed, str(directory))
    for r in loaded_b:
        assert r["step"] == 20
        assert any(not np.array_equal(r["hot"][t], saved["hot"][t]) for t in r["hot"])
        assert _equal(r["weights"], saved["weights"]), "plan B weights differ"
        assert _equal_optim(r["optim"], saved["optim"]), "plan B optimizer state differs"

    bad = tmp_path / "truncated"
    shutil.copytree(directory / "step_00000020", bad)
    data = sorted(p for p in bad.iterdir() if p.suffix == ".distcp")
    data[0].write_bytes(data[0].read_bytes()[:100])
    (stock,) = run_on_ranks(_load_stock_world_1, 1, seed, str(directory), str(bad))
    assert stock["step"] == 20
    assert _equal(stock["weights"], saved["weights"]), "stock weights differ"
    assert _equal_optim(stock["optim"], saved["optim"]), "stock optimizer state differs"
    assert stock["bad_error"] is not None and f"{data[0]} is 100 bytes" in stock["bad_error"]


def test_missing_and_incomplete_checkpoints_are_refused(tmp_path: Path):
    assert latest_checkpoint(tmp_path) is None
    (tmp_path / "step_00000001").mkdir()
    (tmp_path / "LATEST").write_text("step_00000001")
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        latest_checkpoint(tmp_path)


def test_leftovers_retention_and_an_interrupted_resave(tmp_path: Path):
    def step(name: str, complete: bool = True) -> Path:
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / ".metadata").write_bytes(b"m")
        return tmp_path / name

    for name, complete in [("step_00000001", True), ("step_00000002", False),
                           ("step_00000003", True), ("step_00000004", True),
                           (".step_00000005.tmp", False)]:
        step(name, complete)
    (tmp_path / "LATEST").write_text("step_00000003")
    (tmp_path / "LATEST.tmp").write_text("step_0000")
    # step 4 is complete but unpublished (died between rename and LATEST): kept
    assert [p.name for p in files.leftovers(tmp_path)] == [
        ".step_00000005.tmp", "step_00000002", "LATEST.tmp"]
    files.remove(files.leftovers(tmp_path))
    assert [p.name for p in files.prune(tmp_path, keep=1)] == ["step_00000001"]  # not LATEST's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "step_00000003",
                                                          "step_00000004"]
    # a re-save of step 3 died between moving the old copy aside and renaming the new one
    (tmp_path / "step_00000003").rename(files.replaced(tmp_path / "step_00000003"))
    assert latest_checkpoint(tmp_path) == tmp_path / ".step_00000003.old.tmp"
    assert files.leftovers(tmp_path) == []
