"""Readers: every format yields exactly the file's ids, chunked, split over ranks; bad files
give clear errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import KeyedJaggedTensor
from torchrec.datasets.utils import Batch

from torchrec_hot import PopularityProfile
from torchrec_hot.data.readers import kjt_source, open_source
from torchrec_hot.tables.spec import TableSpec

PROPS = settings(max_examples=20, deadline=None, derandomize=True)


def _collect(source, chunk, rank=0, world=1):
    """feature -> (values, lengths per sample) over all chunks of one rank."""
    out: dict[str, tuple[list, list]] = {}
    for c in source.chunks(chunk, rank, world):
        for name, f in c.features.items():
            v, ln = out.setdefault(name, ([], []))
            v.append(f.values.numpy().astype(np.int64))
            ln.append(np.ones(c.num_samples, np.int64) if f.lengths is None else f.lengths.numpy())
    return {k: (np.concatenate(v), np.concatenate(ln)) for k, (v, ln) in out.items()}


@PROPS
@given(
    rows=st.integers(0, 3000),
    cols=st.integers(1, 5),
    chunk=st.integers(1, 1000),
    world=st.integers(1, 3),
    dtype=st.sampled_from([np.int32, np.int64, np.uint16]),
    seed=st.integers(0, 2**31),
)
def test_npy_columns_chunks_and_ranks(tmp_path_factory, rows, cols, chunk, world, dtype, seed):
    data = np.random.default_rng(seed).integers(0, 1000, (rows, cols)).astype(dtype)
    path = tmp_path_factory.mktemp("npy") / "day_0_sparse.npy"
    np.save(path, data)
    source = open_source([path])
    assert source.columns == [f"cat_{j}" for j in range(cols)] and source.num_samples == rows
    parts = [_collect(source, chunk, r, world) for r in range(world)]
    for j in range(cols):
        got = np.concatenate([p[f"cat_{j}"][0] for p in parts if p] + [np.zeros(0, np.int64)])
        assert np.array_equal(np.sort(got), np.sort(data[:, j].astype(np.int64)))
    whole = _collect(source, chunk)
    for j in range(cols):
        if rows:
            np.testing.assert_array_equal(whole[f"cat_{j}"][0], data[:, j])


def test_npy_files_profile_like_kjts(tmp_path: Path):
    rng = np.random.default_rng()
    days = [rng.integers(0, 50, (n, 3)).astype(np.int32) for n in (1000, 333)]
    paths = []
    for i, d in enumerate(days):
        paths.append(tmp_path / f"day_{i}_sparse.npy")
        np.save(paths[-1], d)
    tables = [TableSpec(f"t_cat_{j}", 50, 8, (f"cat_{j}",)) for j in range(3)]
    profile = PopularityProfile(tables)
    for chunk in open_source(paths).chunks(128):
        profile.update_chunk(chunk, batch_size=64)
    data = np.concatenate(days)
    for j in range(3):
        np.testing.assert_array_equal(profile.counts(f"t_cat_{j}"),
                                      np.bincount(data[:, j], minlength=50))
    assert profile.num_samples == 1333 and profile.num_batches == sum(
        -(-min(128, 1000 - s) // 64) for s in range(0, 1000, 128)
    ) + sum(-(-min(128, 333 - s) // 64) for s in range(0, 333, 128))


def test_npz_fixed_multi_hot_and_jagged(tmp_path: Path):
    rng = np.random.default_rng()
    lengths = rng.integers(0, 4, 200)
    jagged = rng.integers(0, 30, int(lengths.sum()))
    fixed = rng.integers(0, 9, (200, 2))
    single = rng.integers(0, 5, 200).astype(np.int16)
    path = tmp_path / "cols.npz"
    np.savez(path, user=jagged, user__lengths=lengths, pair=fixed, single=single)
    got = _collect(open_source([path]), 64)
    np.testing.assert_array_equal(got["user"][0], jagged)
    np.testing.assert_array_equal(got["user"][1], lengths)
    np.testing.assert_array_equal(got["pair"][0], fixed.reshape(-1))
    np.testing.assert_array_equal(got["single"][0], single)
    with pytest.raises(ValueError, match="not in"):
        open_source([path], columns=["nope"])


def test_parquet_and_csv(tmp_path: Path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    rng = np.random.default_rng()
    lists = [list(rng.integers(0, 20, int(n))) for n in rng.integers(0, 4, 300)]
    ints = rng.integers(0, 7, 300)
    table = pa.table({"ids": pa.array(lists, pa.list_(pa.int64())), "small": ints})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=77)
    got = _collect(open_source([tmp_path / "x.parquet"]), 50)
    np.testing.assert_array_equal(got["ids"][0], np.concatenate([np.array(x, int) for x in lists]))
    np.testing.assert_array_equal(got["ids"][1], [len(x) for x in lists])
    np.testing.assert_array_equal(got["small"][0], ints)
    pacsv.write_csv(pa.table({"a": ints, "b": ints[::-1].copy()}), tmp_path / "x.csv")
    got = _collect(open_source([tmp_path / "x.csv"]), 64)
    np.testing.assert_array_equal(got["b"][0], ints[::-1])
    pacsv.write_csv(pa.table({"a": ["x", "y"]}), tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="expected integers"):
        list(open_source([tmp_path / "bad.csv"]).chunks())


def test_kjts_and_torchrec_batches():
    kjt = KeyedJaggedTensor.from_lengths_sync(
        keys=["a", "b"], values=torch.tensor([1, 2, 3, 4]), lengths=torch.tensor([1, 0, 2, 1])
    )
    batch = Batch(dense_features=torch.zeros(2, 1), sparse_features=kjt, labels=torch.zeros(2))
    chunks = list(kjt_source([kjt, batch]))
    assert [c.num_samples for c in chunks] == [2, 2]
    assert chunks[1].features["b"].values.tolist() == [2, 3, 4]
    assert chunks[1].features["b"].lengths.tolist() == [2, 1]
    with pytest.raises(ValueError, match="KeyedJaggedTensors or TorchRec Batches"):
        list(kjt_source([torch.zeros(3)]))
    tables = [TableSpec("ta", 5, 4, ("a",)), TableSpec("tb", 5, 4, ("b",))]
    profile = PopularityProfile(tables).update_all([kjt, batch])  # a DataLoader of Batches
    assert profile.counts("tb").tolist() == [0, 0, 2, 2, 2] and profile.num_samples == 4


def test_bad_files_are_named(tmp_path: Path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((100, 4), dtype=np.int32))
    cut = tmp_path / "cut.npy"
    cut.write_bytes(good.read_bytes()[:-50])
    with pytest.raises(ValueError, match="cut.npy"):
        list(open_source([cut]).chunks())
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="integer"):
        open_source([floats])
    with pytest.raises(ValueError, match="does not exist"):
        open_source([tmp_path / "missing.npy"])
    other = tmp_path / "five.npy"
    np.save(other, np.zeros((3, 5), dtype=np.int32))
    with pytest.raises(ValueError, match="different column counts"):
        open_source([good, other])
    with pytest.raises(ValueError, match="format"):
        open_source([tmp_path / "x.bin"]) if (tmp_path / "x.bin").write_bytes(b"1") else None


def test_out_of_range_file_ids_name_feature_table_and_value(tmp_path: Path):
    data = np.zeros((10, 2), dtype=np.int32)
    data[7, 1] = 99
    np.save(tmp_path / "d.npy", data)
    profile = PopularityProfile([TableSpec("t_cat_0", 5, 4, ("cat_0",)),
                                 TableSpec("t_cat_1", 50, 4, ("cat_1",))])
    with pytest.raises(ValueError) as err:
        for chunk in open_source([tmp_path / "d.npy"]).chunks():
            profile.update_chunk(chunk)
    assert "'cat_1'" in str(err.value) and "'t_cat_1'" in str(err.value)
    assert "id 99" in str(err.value) and profile.num_samples == 0


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".parquet", ".csv"])
def test_empty_files_are_refused_with_a_clear_error(tmp_path, suffix):
    """What an interrupted np.save or a full disk leaves: 0 bytes, named as such."""
    empty = tmp_path / f"day{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        open_source([empty])
