"""The whole job as 2 hosts x 2 ranks: two torchrun agents on loopback meet at one c10d
rendezvous endpoint, as on two machines; hot/cold training still equals stock TorchRec."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torchrec_hot.cli.main import main as cli

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.multiprocess
def test_two_hosts_two_ranks_each(tmp_path: Path):
    seed = str(np.random.default_rng().integers(1000))
    profile, plan = tmp_path / "p.npz", tmp_path / "plan.json"
    assert cli(["profile", "--synthetic", "criteo-kaggle", "--scale", "0.002", "--batches", "10",
                "--batch-size", "256", "--embedding-dim", "8", "--seed", seed,
                "--out", str(profile)]) == 0
    assert cli(["plan", "--profile", str(profile), "--world-size", "4", "--hbm-gb", "0.0002",
                "--compute-device", "cpu", "--batch-size", "32", "--no-stock",
                "--module-path", "model.sparse_arch.embedding_bag_collection",
                "--out", str(plan)]) == 0
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    hosts = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
             "--nproc_per_node", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
             "--rdzv-id", f"job{seed}", str(ROOT / "examples" / "train_dlrm.py"),
             "--plan", str(plan), "--compare", "--steps", "20", "--batch-size", "32",
             "--seed", seed],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        for _ in range(2)
    ]
    outputs = [h.communicate(timeout=600) for h in hosts]
    for h, (_, err) in zip(hosts, outputs, strict=True):
        assert h.returncode == 0, err[-3000:]
    printed = "".join(out for out, _ in outputs)
    assert "4 ranks x 32 samples/step" in printed
    assert "max abs difference of the final logical weights: 0\n" in printed, printed
