"""Windows, format-2 files (and format-1 files from torchrec-hot 0.1), merging, traces."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

from tests.builders.profiles import assert_same_profile
from torchrec_hot import (
    PopularityProfile,
    ProfileFormatError,
    load_profile,
    merge_profiles,
    save_profile,
)
from torchrec_hot.data.workloads import window_batches
from torchrec_hot.profiling.io import FORMAT_VERSION

PROPS = settings(max_examples=15, deadline=None, derandomize=True)


def _tables(sizes=(50, 7, 300)):
    return [
        EmbeddingBagConfig(name=f"t{i}", num_embeddings=n, embedding_dim=8,
                           feature_names=[f"f{i}"] + (["g0"] if i == 0 else []))
        for i, n in enumerate(sizes)
    ]


def _kjt(tables, batch, rng):
    keys, lengths, values = [], [], []
    for t in tables:
        for f in t.feature_names:
            lens = rng.integers(0, 3, size=batch)
            keys.append(f)
            lengths.append(lens)
            values.append(rng.integers(0, t.num_embeddings, size=int(lens.sum())))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.from_numpy(np.concatenate(values)),
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
    )


def test_windows_count_separately_and_add_up():
    rng = np.random.default_rng()
    tables = _tables()
    profile = PopularityProfile(tables)
    per_window = {"mon": PopularityProfile(tables), "tue": PopularityProfile(tables)}
    for i in range(6):
        kjt = _kjt(tables, 16, rng)
        name = "mon" if i < 4 else "tue"
        profile.update(kjt, window=name)
        per_window[name].update(kjt)
    assert profile.windows == ["mon", "tue"]
    for t in tables:
        for name, alone in per_window.items():
            np.testing.assert_array_equal(profile.counts(t.name, name), alone.counts(t.name))
        np.testing.assert_array_equal(
            profile.counts(t.name), sum(p.counts(t.name) for p in per_window.values())
        )
    assert profile.window_data("mon").num_batches == 4 and profile.num_samples == 96
    profile.update(_kjt(tables, 4, rng))  # no name: the current window
    assert profile.window_data("tue").num_batches == 3
    with pytest.raises(KeyError, match="no window"):
        profile.counts("t0", "wed")


def test_roundtrip_with_windows_sketches_sampling_and_trace(tmp_path: Path):
    tables = _tables((5000, 40, 20000))
    profile = PopularityProfile(tables, sketch_capacities={"t2": 300}, sample_rate=0.5, seed=4,
                                trace_max_ids=20000, trace_run_batches=2)
    for w in range(3):
        for kjt in window_batches(tables, 5, 256, 1.1, window=w, drift_tables={"t0"}):
            profile.update(kjt, window=f"day{w}")
    assert profile.mode("t2") == "sketch" and profile.error_bound("t2") > 0
    assert profile.trace.num_ids > 0
    path = tmp_path / "p.npz"
    save_profile(profile, path)
    loaded = load_profile(path)
    assert_same_profile(profile, loaded)
    assert loaded.sample_rate == 0.5 and loaded.sketch_capacity("t2") == 300
    assert json.loads(str(np.load(path)["meta"]))["format_version"] == FORMAT_VERSION == 3


def test_version_1_files_still_load(tmp_path: Path):
    counts = [np.arange(5, dtype=np.int64), np.array([3, 0, 1], dtype=np.int64)]
    meta = {"magic": "torchrec-hot-profile", "format_version": 1, "num_batches": 2,
            "num_samples": 9, "tables": [
                {"name": "a", "num_embeddings": 5, "embedding_dim": 4, "feature_names": ["fa"]},
                {"name": "b", "num_embeddings": 3, "embedding_dim": 4, "feature_names": ["fb"]}]}
    path = tmp_path / "v1.npz"
    np.savez(path, meta=np.array(json.dumps(meta)), counts_0=counts[0], counts_1=counts[1])
    p = load_profile(path)
    assert p.windows == ["default"] and (p.num_batches, p.num_samples) == (2, 9)
    np.testing.assert_array_equal(p.counts("a"), counts[0])
    np.testing.assert_array_equal(p.counts("b"), counts[1])
    assert p.mode("a") == "exact" and p.hot_share("a", 1) == pytest.approx(4 / 10)


def test_corrupt_version_2_files_are_refused(tmp_path: Path):
    tables = _tables((30, 20, 10))
    path = tmp_path / "p.npz"
    for _ in range(20):  # uniform ids can leave a Misra-Gries sketch empty: draw again
        p = PopularityProfile(tables, sketch_capacities={"t0": 8}, trace_run_batches=1)
        for _ in range(3):
            p.update(_kjt(tables, 8, np.random.default_rng()))
        save_profile(p, path)
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if arrays["w0_ids_0"].size:
            break
    meta = json.loads(str(arrays["meta"]))

    def write(name, **changes):
        out = tmp_path / name
        np.savez(out, **{**arrays, **changes})
        return out

    bad_total = dict(meta)
    bad_total["windows"] = [dict(meta["windows"][0], totals=[999, 0, 0])]
    with pytest.raises(ProfileFormatError, match="add up to"):
        load_profile(write("total.npz", meta=np.array(json.dumps(bad_total))))
    ids = arrays["w0_ids_0"].copy()
    ids[0] = 10**6
    with pytest.raises(ProfileFormatError, match="sketch .* inconsistent"):
        load_profile(write("sketch.npz", w0_ids_0=np.sort(ids)))
    with pytest.raises(ProfileFormatError, match="shape"):
        load_profile(write("shape.npz", w0_counts_1=np.zeros(3, dtype=np.int64)))
    with pytest.raises(ProfileFormatError, match="trace"):
        load_profile(write("trace.npz", trace_offsets_1=arrays["trace_offsets_1"][:-1]))
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) - 100])
    with pytest.raises(ProfileFormatError, match="corrupt or truncated"):
        load_profile(tmp_path / "cut.npz")


@PROPS
@given(splits=st.lists(st.integers(0, 3), min_size=1, max_size=8), seed=st.integers(0, 2**31))
def test_merge_equals_profiling_everything_in_one(splits, seed):
    """Batches spread over up to 4 'jobs' (and 2 windows), merged: same as one profile."""
    rng = np.random.default_rng(seed)
    tables = _tables((60, 9, 200))
    whole = PopularityProfile(tables, trace_max_ids=0)
    jobs = [PopularityProfile(tables, trace_max_ids=0) for _ in range(4)]
    for i, job in enumerate(splits):
        kjt = _kjt(tables, 8, rng)
        window = "a" if i % 2 else "b"
        whole.update(kjt, window)
        jobs[job].update(kjt, window)
    merged = merge_profiles(*jobs)
    assert sorted(merged.windows) == sorted(whole.windows)
    merged.reorder_windows(whole.windows)
    assert_same_profile(whole, merged)


def test_merge_refuses_incompatible_profiles():
    a = PopularityProfile(_tables((60, 9, 200)), sample_rate=0.5)
    a.update(_kjt(a.tables, 4, np.random.default_rng()))
    b = PopularityProfile(_tables((60, 10, 200)))
    c = PopularityProfile(_tables((60, 9, 200)), sketch_capacities={"t2": 10})
    d = PopularityProfile(_tables((60, 9, 200)))
    d.update(_kjt(d.tables, 4, np.random.default_rng()))
    with pytest.raises(ValueError) as err:
        merge_profiles(a, b, c, d)
    msg = str(err.value)
    assert "profile 1: table 't1': profile 0 has 10 rows, profile 9" in msg or "'t1'" in msg
    assert "profile 2: table 't2' is sketch, profile 0 has it exact" in msg
    assert "profile 3: window 'default' was sampled at 1.0, profile 0 at 0.5" in msg


def test_trace_keeps_whole_runs_within_its_budget():
    tables = _tables((100, 10, 100))
    p = PopularityProfile(tables, trace_max_ids=600, trace_run_batches=3, seed=1)
    kjts = [_kjt(tables, 10, np.random.default_rng(i)) for i in range(30)]
    for kjt in kjts:
        p.update(kjt)
    runs = p.trace.runs
    assert runs and p.trace.num_ids <= 600
    for run in runs:
        assert run.num_batches == 3 and run.start_sample % 30 == 0
        first = run.start_sample // 10
        for b, kjt in enumerate(kjts[first : first + 3]):
            by_key = kjt.to_dict()
            for t in tables:
                want = np.concatenate([by_key[f].values().numpy() for f in t.feature_names])
                np.testing.assert_array_equal(run.batches(t.name)[b], want)


@PROPS
@given(
    counts=st.lists(st.integers(0, 300_000), max_size=60),
    ks=st.lists(st.integers(-1, 70), min_size=1, max_size=5),
)
def test_histogram_hot_shares_equal_a_full_sort(counts, ks):
    from torchrec_hot.profiling.stats import exact_hot_shares

    c = np.array(counts, dtype=np.int64)
    total = c.sum()
    for k, got in zip(ks, exact_hot_shares(c, ks), strict=True):
        top = np.sort(c)[::-1][: max(k, 0)].sum()
        assert got.share == pytest.approx(top / total if total else 0.0)
