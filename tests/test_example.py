"""examples/train_dlrm.py under torchrun: DLRM trained hot/cold equals stock TorchRec exactly,
through TorchRec's train pipeline (default) and in the plain loop (`--no-pipeline`), with a plan
made by the CLI (`--plan`) or in the job by HotShardingPlanner.collective_plan (`--profile`)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torchrec_hot import HotPlan
from torchrec_hot.cli.main import main as cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.multiprocess
def test_dlrm_hot_cold_training_with_replanning_matches_stock_bit_for_bit(tmp_path: Path):
    """Pipelined hot/cold == stock (one run, --compare) == hot/cold in the plain loop."""
    seed = str(np.random.default_rng().integers(1000))
    profile, plan = tmp_path / "p.npz", tmp_path / "plan.json"
    assert cli(["profile", "--synthetic", "criteo-kaggle", "--scale", "0.002", "--alpha", "1.05",
                "--batches", "10", "--batch-size", "256", "--embedding-dim", "8", "--seed", seed,
                "--out", str(profile)]) == 0
    assert cli(["plan", "--profile", str(profile), "--world-size", "2", "--hbm-gb", "0.0002",
                "--compute-device", "cpu", "--batch-size", "64", "--no-stock",
                "--module-path", "model.sparse_arch.embedding_bag_collection",
                "--out", str(plan)]) == 0
    assert any(t.placement.value == "split" for t in HotPlan.from_json(plan).tables)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    common = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
              str(ROOT / "examples" / "train_dlrm.py"), "--steps", "30",
              "--batch-size", "64", "--seed", seed, "--replan-every", "10"]
    run = subprocess.run(
        [*common, "--plan", str(plan), "--compare",
         "--weights-out", str(tmp_path / "pipelined.pt")],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "[torchrec-hot]" in out  # the plan's report
    assert "stock TorchRec:" in out and "torchrec-hot:" in out and "samples/s" in out
    assert "train pipeline (TrainPipelineSparseDist)" in out  # no UVM cache on CPU
    # hot rows followed the trained ids every 10 steps, and still nothing differs from stock
    assert run.stderr.count("re-planned") == 3, run.stderr[-3000:]
    assert "max abs difference of the final logical weights: 0\n" in out, out

    # planned in the job, the TorchRec way, from the same profile and budget: the same plan
    plain = subprocess.run(
        [*common, "--profile", str(profile), "--hbm-gb", "0.0002", "--no-pipeline",
         "--weights-out", str(tmp_path / "plain.pt")],
        capture_output=True, text=True, env=env, timeout=300, cwd=ROOT,
    )
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert plain.stderr.count("re-planned") == 3, plain.stderr[-3000:]
    pipelined, unpipelined = (torch.load(tmp_path / f"{n}.pt") for n in ("pipelined", "plain"))
    assert pipelined.keys() == unpipelined.keys()
    assert all(torch.equal(pipelined[k], unpipelined[k]) for k in pipelined)
