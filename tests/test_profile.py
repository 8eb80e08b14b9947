"""PopularityProfile against a plain numpy reference, files, and bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

from torchrec_hot import PopularityProfile, ProfileFormatError, load_profile, save_profile

PROPS = settings(max_examples=30, deadline=None, derandomize=True)


def _tables(sizes: list[int], shared: bool) -> list[EmbeddingBagConfig]:
    tables = []
    for i, n in enumerate(sizes):
        features = [f"f{i}"] + ([f"f{i}_b"] if shared and i == 0 else [])
        tables.append(
            EmbeddingBagConfig(
                name=f"t{i}", num_embeddings=n, embedding_dim=8, feature_names=features
            )
        )
    return tables


def _random_kjt(tables, batch: int, rng: np.random.Generator, weighted: bool):
    keys, lengths, values = [], [], []
    for t in tables:
        for f in t.feature_names:
            lens = rng.integers(0, 4, size=batch)
            keys.append(f)
            lengths.append(lens)
            values.append(rng.integers(0, t.num_embeddings, size=int(lens.sum())))
    v = torch.from_numpy(np.concatenate(values).astype(np.int64))
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys,
        values=v,
        lengths=torch.from_numpy(np.concatenate(lengths).astype(np.int32)),
        weights=torch.rand(v.numel()) if weighted else None,
    ), dict(zip(keys, values, strict=True))


@PROPS
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=4),
    batches=st.integers(1, 4),
    batch=st.integers(1, 16),
    shared=st.booleans(),
    weighted=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_counts_match_bincount(sizes, batches, batch, shared, weighted, seed):
    rng = np.random.default_rng(seed)
    tables = _tables(sizes, shared)
    profile = PopularityProfile(tables)
    expected = {t.name: np.zeros(t.num_embeddings, dtype=np.int64) for t in tables}
    owner = {f: t for t in tables for f in t.feature_names}
    for _ in range(batches):
        kjt, ids = _random_kjt(tables, batch, rng, weighted)
        profile.update(kjt)
        for f, v in ids.items():
            t = owner[f]
            expected[t.name] += np.bincount(v, minlength=t.num_embeddings)
    for t in tables:
        got = profile.counts(t.name)
        assert got.dtype == np.int64 and got.shape == (t.num_embeddings,)
        np.testing.assert_array_equal(got, expected[t.name])
        assert profile.lookups(t.name) == int(expected[t.name].sum())
        k = int(rng.integers(0, t.num_embeddings + 2))
        top = np.sort(expected[t.name])[::-1][:k].sum()
        total = expected[t.name].sum()
        assert profile.hot_share(t.name, k) == pytest.approx(top / total if total else 0.0)
    assert profile.num_batches == batches
    assert profile.num_samples == batches * batch


def test_save_load_roundtrip(tmp_path: Path):
    rng = np.random.default_rng()
    tables = _tables([50, 7, 300], shared=True)
    profile = PopularityProfile(tables)
    for _ in range(3):
        profile.update(_random_kjt(tables, 32, rng, weighted=False)[0])
    path = tmp_path / "p.npz"
    save_profile(profile, path)
    loaded = load_profile(path)
    assert loaded.tables == profile.tables
    assert (loaded.num_batches, loaded.num_samples) == (3, 96)
    for t in tables:
        np.testing.assert_array_equal(loaded.counts(t.name), profile.counts(t.name))
    loaded.check_matches(tables)


@pytest.mark.parametrize("bad", [-1, 50, 10**9])
def test_out_of_range_id_names_feature_table_value_and_changes_nothing(bad):
    tables = _tables([50, 10], shared=False)
    profile = PopularityProfile(tables)
    good = KeyedJaggedTensor.from_lengths_sync(
        keys=["f0", "f1"], values=torch.tensor([1, 2, 3]), lengths=torch.tensor([1, 1, 1, 0])
    )
    profile.update(good)
    before = {t.name: profile.counts(t.name) for t in tables}
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["f1", "f0"], values=torch.tensor([3, 4, bad]), lengths=torch.tensor([1, 1, 1, 0])
    )
    with pytest.raises(ValueError) as err:
        profile.update(kjt)
    msg = str(err.value)
    assert "'f0'" in msg and "'t0'" in msg and str(bad) in msg and "50 rows" in msg
    for t in tables:  # the valid feature f1 of the bad batch was not counted either
        np.testing.assert_array_equal(profile.counts(t.name), before[t.name])
    assert profile.num_batches == 1


def test_unknown_feature_is_refused():
    profile = PopularityProfile(_tables([5], shared=False))
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["nope"], values=torch.tensor([0]), lengths=torch.tensor([1])
    )
    with pytest.raises(ValueError, match="'nope'"):
        profile.update(kjt)


def test_mismatched_model_lists_every_difference():
    profile = PopularityProfile(_tables([50, 10, 5], shared=False))
    model = _tables([50, 11], shared=False)
    model[0] = EmbeddingBagConfig(
        name="t0", num_embeddings=50, embedding_dim=16, feature_names=["f0"]
    )
    model.append(
        EmbeddingBagConfig(name="extra", num_embeddings=3, embedding_dim=8, feature_names=["x"])
    )
    with pytest.raises(ValueError) as err:
        profile.check_matches(model)
    msg = str(err.value)
    assert "table 't1': model has 11 rows, profile 10" in msg
    assert "table 't2' is in the profile but not in the model" in msg
    assert "table 'extra' is missing from the profile" in msg
    assert "table 't0': model dim 16, profile 8" in msg
    profile.check_matches(model[:1] + [_tables([50, 10, 5], False)[i] for i in (1, 2)],
                          check_dims=False)


def test_corrupt_truncated_and_foreign_files(tmp_path: Path):
    tables = _tables([20, 30], shared=False)
    profile = PopularityProfile(tables)
    path = tmp_path / "p.npz"
    save_profile(profile, path)
    data = path.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProfileFormatError, match="corrupt or truncated"):
        load_profile(truncated)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ProfileFormatError, match="corrupt or truncated"):
        load_profile(garbage)

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, counts=np.zeros(3))
    with pytest.raises(ProfileFormatError, match="corrupt or truncated"):
        load_profile(foreign)

    with pytest.raises(ProfileFormatError, match="does not exist"):
        load_profile(tmp_path / "missing.npz")

    wrong_shape = tmp_path / "wrong_shape.npz"
    import json

    meta = json.dumps({"magic": "torchrec-hot-profile", "format_version": 1, "num_batches": 0,
                       "num_samples": 0, "tables": [{"name": "t0", "num_embeddings": 20,
                                                      "embedding_dim": 8,
                                                      "feature_names": ["f0"]}]})
    np.savez(wrong_shape, meta=np.array(meta), counts_0=np.zeros(19, dtype=np.int64))
    with pytest.raises(ProfileFormatError, match="shape"):
        load_profile(wrong_shape)

    newer = tmp_path / "newer.npz"
    np.savez(newer, meta=np.array(meta.replace('"format_version": 1', '"format_version": 9')))
    with pytest.raises(ProfileFormatError, match="version 9"):
        load_profile(newer)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_large_chunks_count_on_threads_as_numpy_does(dtype):
    """Chunks large enough for the profile's thread pool (2^18+ ids), tables on both kernels
    (bincount: small next to the chunk; scatter_add_: larger), equal to np.bincount, and the
    same on one thread; a chunk with two bad features raises the first one in chunk order and
    counts nothing."""
    from torchrec_hot.data.chunk import FeatureIds, IdChunk

    rng = np.random.default_rng()
    sizes = [3, 1500, 70_000, 3_000_000]
    tables = _tables(sizes, shared=False)
    pooled, single = PopularityProfile(tables, threads=2), PopularityProfile(tables, threads=1)
    expected = [np.zeros(n, dtype=np.int64) for n in sizes]
    for samples in (1 << 17, 3 << 16):
        ids = [(rng.zipf(1.2, samples) * 7919) % n for n in sizes]
        chunk = IdChunk(samples, {
            f"f{i}": FeatureIds(torch.from_numpy(v).to(dtype)) for i, v in enumerate(ids)
        })
        for profile in (pooled, single):
            profile.update_chunk(chunk)
        for i, v in enumerate(ids):
            expected[i] += np.bincount(v, minlength=sizes[i])
    for i, t in enumerate(tables):
        np.testing.assert_array_equal(pooled.counts(t.name), expected[i])
        np.testing.assert_array_equal(single.counts(t.name), expected[i])
    bad = {f"f{i}": FeatureIds(torch.zeros(1 << 17, dtype=dtype)) for i in range(4)}
    bad["f3"].values[5] = -2
    bad["f1"].values[7] = 1500
    with pytest.raises(ValueError, match="'f1'.*1500 rows.*1500"):
        pooled.update_chunk(IdChunk(1 << 17, bad))
    for i, t in enumerate(tables):
        np.testing.assert_array_equal(pooled.counts(t.name), expected[i])
