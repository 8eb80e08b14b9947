"""The command line end to end: profile -> plan -> report, and its errors."""

from pathlib import Path

import numpy as np

from torchrec_hot import HotPlan, PopularityProfile
from torchrec_hot.cli import main
from torchrec_hot.data.synthetic import CRITEO_KAGGLE


def test_profile_plan_report(tmp_path: Path, capsys):
    profile, plan = tmp_path / "p.npz", tmp_path / "plan.json"
    seed = str(np.random.default_rng().integers(2**31))
    assert main(["profile", "--synthetic", "criteo-kaggle", "--scale", "0.001", "--batches",
                 "4", "--batch-size", "512", "--embedding-dim", "16", "--seed", seed,
                 "--out", str(profile)]) == 0
    assert "profiled 4 batches, 2,048 samples, 26 tables" in capsys.readouterr().out
    loaded = PopularityProfile.load(profile)
    assert len(loaded.tables) == len(CRITEO_KAGGLE) and loaded.num_samples == 2048
    assert main(["plan", "--profile", str(profile), "--world-size", "4", "--hbm-gb", "0.0005",
                 "--embedding-dim", "32", "--batch-size", "512", "--out", str(plan)]) == 0
    planned = capsys.readouterr().out
    assert "[torchrec-hot]" in planned and "lookups served from HBM: torchrec-hot" in planned
    hot_plan = HotPlan.from_json(plan)
    assert {t.embedding_dim for t in hot_plan.tables} == {32}  # --embedding-dim overrides 16
    assert max(hot_plan.hbm_bytes_per_rank) <= 0.0005 * 2**30
    assert main(["report", str(plan)]) == 0
    reported = capsys.readouterr().out
    assert reported.strip() == planned.split("\nplanned in")[0].strip()


def test_errors_are_one_line_and_exit_2(tmp_path: Path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"garbage")
    assert main(["plan", "--profile", str(bad), "--world-size", "2", "--hbm-gb", "1",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "torchrec-hot plan: error:" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
