"""Distributed profiling: 2 gloo ranks each profile their share of the input; after the
all-reduce every rank holds exactly what one process profiling all of it holds."""

from pathlib import Path

import numpy as np
import pytest

from tests.dist_utils import run_on_ranks
from torchrec_hot import PopularityProfile, all_reduce_profile, load_profile
from torchrec_hot.data.readers import open_source
from torchrec_hot.tables.spec import TableSpec

pytestmark = pytest.mark.multiprocess

TABLES = [TableSpec(f"t_cat_{j}", n, 8, (f"cat_{j}",)) for j, n in enumerate([40, 5000, 70])]


def _profile(path: str, rank: int, world: int, windows: bool) -> PopularityProfile:
    profile = PopularityProfile(TABLES, sketch_capacities={"t_cat_1": 200}, seed=3, rank=rank,
                                trace_max_ids=3000, trace_run_batches=2)
    for i, chunk in enumerate(open_source([path]).chunks(500, rank, world)):
        window = ("early" if i * world + rank < 4 else "late") if windows else None
        profile.update_chunk(chunk, window, batch_size=100)
    return profile


def _summary(p: PopularityProfile) -> dict:
    return {
        "windows": p.windows,
        "samples": [p.window_data(w).num_samples for w in p.windows],
        "batches": [p.window_data(w).num_batches for w in p.windows],
        "counts": {(w, t.name): p.counts(t.name, w) for w in p.windows for t in TABLES},
        "bounds": {(w, t.name): p.error_bound(t.name, w) for w in p.windows for t in TABLES},
        "trace": p.trace.num_ids,
    }


def _ranked(rank: int, world: int, path: str) -> dict:
    profile = _profile(path, rank, world, windows=True)
    if rank == 1:
        profile.window("only-on-rank-1")  # an empty window one rank lacks
    all_reduce_profile(profile)
    out = _summary(profile)
    from torchrec_hot.cli.main import main

    cli_out = str(Path(path).with_name("cli.npz"))
    assert main(["profile", path, "--rows", "40,5000,70", "--distributed", "--chunk-samples",
                 "300", "--out", cli_out]) == 0
    bad = PopularityProfile([TableSpec("x", 3, 8, ("x",))] if rank else TABLES)
    try:
        all_reduce_profile(bad)
    except ValueError as e:
        out["error"] = str(e)
    return out


def test_two_rank_all_reduce_equals_one_process(tmp_path: Path):
    rng = np.random.default_rng()
    data = np.stack([rng.zipf(1.2, 4300) % n for n in (40, 5000, 70)], 1).astype(np.int32)
    path = tmp_path / "day.npy"
    np.save(path, data)
    ranks = run_on_ranks(_ranked, 2, str(path))
    one = _profile(str(path), 0, 1, windows=True)
    one.window("only-on-rank-1")
    for got in ranks:
        assert "cannot all-reduce" in got["error"] and "'x'" in got["error"]
        want = _summary(one)
        assert got["windows"] == want["windows"]
        assert got["samples"] == want["samples"] and got["batches"] == want["batches"]
        assert got["trace"] <= 3000
        for key, counts in want["counts"].items():
            if key[1] == "t_cat_1":  # sketched: the merged sketch keeps its bounds
                part = data[:2000, 1] if key[0] == "early" else data[2000:, 1]
                exact = np.bincount(part, minlength=5000)
                if key[0] == "only-on-rank-1":
                    exact = np.zeros(5000, dtype=np.int64)
                d, est = got["bounds"][key], got["counts"][key]
                tracked = est > d
                assert np.all(est[tracked] - d <= exact[tracked])
                assert np.all(exact[tracked] <= est[tracked])
                assert np.all(exact[~tracked] <= d)
                continue
            np.testing.assert_array_equal(got["counts"][key], counts)
    cli = load_profile(tmp_path / "cli.npz")  # torchrun-style CLI run, rank 0 saved
    assert cli.num_samples == 4300
    for j, n in enumerate((40, 5000, 70)):
        want = np.bincount(data[:, j], minlength=n)
        np.testing.assert_array_equal(cli.counts(f"t_cat_{j}"), want)
    np.testing.assert_array_equal(
        sum(ranks[0]["counts"][(w, "t_cat_0")] for w in ranks[0]["windows"]),
        np.bincount(data[:, 0], minlength=40),
    )
    for key in ranks[0]["counts"]:
        np.testing.assert_array_equal(ranks[0]["counts"][key], ranks[1]["counts"][key])
