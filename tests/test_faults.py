"""Faults: SIGKILL one rank of a 2-rank torchrun job (dense layers on Adam under a warmup + cosine
LR schedule, the example's default); torchrun restarts it, the job resumes from its last
checkpoint and ends with the weights, the embedding optimizer state, the dense Adam state and the
LR of a run that was never killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.builders import states_equal
from torchrec_hot.cli.main import main as cli

ROOT = Path(__file__).resolve().parents[1]
STEPS, EVERY = 150, 50


def _job(plan: Path, out: Path, seed: str, restarts: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "--max-restarts", str(restarts), "--monitor-interval", "0.2",
            str(ROOT / "examples" / "train_dlrm.py"), "--plan", str(plan), "--steps", str(STEPS),
            "--batch-size", "64", "--seed", seed, "--checkpoint-dir", str(out / "ckpt"),
            "--checkpoint-every", str(EVERY), "--weights-out", str(out / "final.pt"),
            "--state-out", str(out / "state.pt")]


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def _local_rank(pid: int) -> str | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"LOCAL_RANK="):
            return item.split(b"=", 1)[1].decode()
    return None


@pytest.mark.multiprocess
def test_killed_rank_restarts_from_checkpoint_and_ends_identical(tmp_path: Path):
    seed = str(np.random.default_rng().integers(1000))
    profile, plan = tmp_path / "p.npz", tmp_path / "plan.json"
    assert cli(["profile", "--synthetic", "criteo-kaggle", "--scale", "0.002", "--batches", "10",
                "--batch-size", "256", "--embedding-dim", "8", "--seed", seed,
                "--out", str(profile)]) == 0
    assert cli(["plan", "--profile", str(profile), "--world-size", "2", "--hbm-gb", "0.0002",
                "--compute-device", "cpu", "--batch-size", "64", "--no-stock",
                "--module-path", "model.sparse_arch.embedding_bag_collection",
                "--out", str(plan)]) == 0
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    clean = subprocess.run(_job(plan, tmp_path / "clean", seed, 0), capture_output=True,
                           text=True, env=env, timeout=600, cwd=ROOT)
    assert clean.returncode == 0, clean.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    job = subprocess.Popen(_job(plan, killed_dir, seed, 1), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    latest = killed_dir / "ckpt" / "hot_cold" / "LATEST"
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline and job.poll() is None:
        if latest.exists() and int(latest.read_text().strip()[5:]) >= EVERY:
            victim = next((p for p in _children(job.pid) if _local_rank(p) == "1"), None)
        time.sleep(0.05)
    assert victim is not None, "the job ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = job.communicate(timeout=600)
    assert job.returncode == 0, stderr[-3000:]
    assert "resumed from" in stderr

    a = torch.load(tmp_path / "clean" / "final.pt")
    b = torch.load(killed_dir / "final.pt")
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    sa = torch.load(tmp_path / "clean" / "state.pt.hot_cold")
    sb = torch.load(killed_dir / "state.pt.hot_cold")
    assert sa["dense"]["state"] and any(sa["embedding"].values())  # Adam moments, Adagrad
    assert states_equal(sa, sb)


