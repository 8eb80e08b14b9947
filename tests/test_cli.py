"""The command line end to end: profile -> plan -> report, and its errors."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from torchrec_hot import HotPlan, load_profile
from torchrec_hot.cli.main import main
from torchrec_hot.data.synthetic import CRITEO_KAGGLE


def test_profile_plan_report(tmp_path: Path, capsys):
    profile, plan = tmp_path / "p.npz", tmp_path / "plan.json"
    seed = str(np.random.default_rng().integers(2**31))
    assert main(["profile", "--synthetic", "criteo-kaggle", "--scale", "0.001", "--batches",
                 "4", "--batch-size", "512", "--embedding-dim", "16", "--seed", seed,
                 "--out", str(profile)]) == 0
    assert "profiled 4 batches, 2,048 samples, 26 tables" in capsys.readouterr().out
    loaded = load_profile(profile)
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


def test_profile_files_windows_sampling_memory_and_hashing(tmp_path: Path, capsys):
    rng = np.random.default_rng()
    days = []
    for d in range(2):
        days.append(rng.integers(0, 1000, (3000, 3)).astype(np.int32))
        np.save(tmp_path / f"day_{d}_sparse.npy", days[-1])
    files = [str(tmp_path / f"day_{d}_sparse.npy") for d in range(2)]
    out = tmp_path / "p.npz"
    assert main(["profile", *files, "--rows", "1000,50,1000", "--out", str(out)]) == 2
    assert "'cat_1'" in capsys.readouterr().err  # ids up to 999 in a 50-row table
    assert main(["profile", *files, "--rows", "1000,50,1000", "--hash-ids", "--window-per-file",
                 "--max-memory", "10K", "--chunk-samples", "700", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sketch" in printed and "profiled" in printed
    p = load_profile(out)
    assert p.windows == ["day_0_sparse", "day_1_sparse"]
    assert p.mode("t_cat_1") == "exact" and p.mode("t_cat_0") == "sketch"
    assert p.nbytes <= 2 * 10 * 1024
    for d in range(2):
        np.testing.assert_array_equal(p.counts("t_cat_1", f"day_{d}_sparse"),
                                      np.bincount(days[d][:, 1] % 50, minlength=50))
    assert main(["profile", files[0], "--sample-rate", "0.05", "--seed", "3",
                 "--out", str(out)]) == 0
    assert "inferred" in capsys.readouterr().err
    p = load_profile(out)
    assert p.sample_rate == 0.05 and p.num_samples == 3000
    assert p.table("t_cat_0").num_embeddings == int(days[0][:, 0].max()) + 1


def test_profile_refuses_bad_arguments_and_incompatible_merges(tmp_path: Path, capsys):
    assert main(["profile", "--out", str(tmp_path / "x.npz")]) == 2
    assert "give input files or --synthetic" in capsys.readouterr().err
    assert main(["profile", str(tmp_path / "none.npy"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    base = ["profile", "--synthetic", "criteo-kaggle", "--batches", "1", "--batch-size", "64",
            "--embedding-dim", "8"]
    assert main([*base, "--scale", "0.001", "--out", str(tmp_path / "a.npz")]) == 0
    assert main([*base, "--scale", "0.002", "--out", str(tmp_path / "b.npz")]) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"),
                 "--out", str(tmp_path / "c.npz")]) == 2
    assert "cannot merge the profiles" in capsys.readouterr().err


def test_plan_with_a_holdout_chooses_strategies_and_refuses_a_foreign_one(tmp_path: Path, capsys):
    seed = str(np.random.default_rng().integers(2**31))
    common = ["--synthetic", "criteo-kaggle", "--scale", "0.002", "--batch-size", "512",
              "--embedding-dim", "16", "--seed", seed, "--drift-tables", "t_cat_2"]
    profile, holdout, plan = tmp_path / "p.npz", tmp_path / "h.npz", tmp_path / "plan.json"
    assert main(["profile", *common, "--batches", "8", "--synthetic-window", "0",
                 "--out", str(profile)]) == 0
    assert main(["profile", *common, "--batches", "8", "--synthetic-window", "1",
                 "--trace-ids", str(8 * 512 * 26), "--out", str(holdout)]) == 0
    capsys.readouterr()
    args = ["plan", "--profile", str(profile), "--world-size", "2", "--hbm-gb", "0.0002",
            "--batch-size", "256", "--holdout", str(holdout), "--out", str(plan)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "[strategy per table] cost model H100" in out and "all HBM (limit)" in out
    strategies = HotPlan.from_json(plan).strategies
    assert strategies is not None and strategies.evaluated_on == "hold-out trace"
    other = tmp_path / "other.npz"  # a hold-out of other tables
    assert main(["profile", "--synthetic", "criteo-kaggle", "--scale", "0.004", "--batches",
                 "2", "--batch-size", "64", "--out", str(other)]) == 0
    capsys.readouterr()
    assert main([*args[:-4], "--holdout", str(other), "--out", str(plan)]) == 2
    assert "torchrec-hot plan: error:" in capsys.readouterr().err


def test_plan_a_whole_model_from_a_table_map(tmp_path: Path, capsys):
    profile, plan = tmp_path / "p.npz", tmp_path / "plan.json"
    assert main(["profile", "--synthetic", "criteo-kaggle", "--scale", "0.001", "--batches",
                 "4", "--batch-size", "512", "--embedding-dim", "16", "--out", str(profile)]) == 0
    common = ["plan", "--profile", str(profile), "--world-size", "2", "--hbm-gb", "0.0005",
              "--batch-size", "512", "--no-stock", "--out", str(plan), "--module-path", "m.rest"]
    assert main([*common, "--module", "m.a=t_cat_2,t_cat_3",
                 "--sequence-module", "m.seq=t_cat_11"]) == 0
    hot_plan = HotPlan.from_json(plan)
    assert hot_plan.module_paths == ["m.rest", "m.a", "m.seq"]
    assert {t.name for t in hot_plan.tables_in("m.a")} == {"t_cat_2", "t_cat_3"}
    (seq,) = hot_plan.tables_in("m.seq")
    assert seq.name == "t_cat_11" and not seq.pooled
    assert all(t.pooled for t in hot_plan.tables if t.module_path != "m.seq")
    assert "modules (one budget): m.rest, m.a, m.seq" in capsys.readouterr().out
    assert any(key.startswith("m.seq.split_ec") for key in hot_plan.sharding_plan.plan)
    assert main([*common, "--module", "m.a=t_cat_2,nope"]) == 2
    assert "table 'nope' is not in the profile" in capsys.readouterr().err


def test_raw_criteo_ids_point_at_hash_ids(tmp_path: Path, capsys):
    ids = np.array([[5, 4_293_989_289], [1, 7]], dtype=np.int64)  # a raw 32-bit hash in cat_1
    np.save(tmp_path / "day_0_sparse.npy", ids)
    common = ["profile", str(tmp_path / "day_0_sparse.npy"), "--rows", "10,20",
              "--out", str(tmp_path / "p.npz")]
    assert main(common) == 2
    err = capsys.readouterr().err
    assert "feature 'cat_1'" in err and "4293989289" in err and "--hash-ids" in err
    assert "Traceback" not in err
    assert main([*common, "--hash-ids"]) == 0
    assert load_profile(tmp_path / "p.npz").counts("t_cat_1")[4_293_989_289 % 20] == 1


def test_profile_command_does_not_import_torchrec(tmp_path: Path):
    """`torchrec-hot profile FILE` runs without importing TorchRec (about 2 s of start-up): the
    package's names load on first use and TorchRec is imported only where it is used."""
    ids = tmp_path / "day.npy"
    np.save(ids, np.random.default_rng(0).integers(0, 50, size=(300, 3), dtype=np.int32))
    code = (
        "import sys\nfrom torchrec_hot.cli.main import main\n"
        f"assert main(['profile', {str(ids)!r}, '--rows', '50,50,50', '--out', "
        f"{str(tmp_path / 'p.npz')!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchrec', 'fbgemm_gpu')))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert load_profile(tmp_path / "p.npz").lookups("t_cat_0") == 300
