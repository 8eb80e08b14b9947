"""Profile files, format 3: exact counts sparse or dense with narrowed dtypes (`count_codec`),
int32 traces; format-2 files still load; bad files are one-line `ProfileFormatError`s."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders.profiles import assert_same_profile
from torchrec_hot import (
    PopularityProfile,
    ProfileFormatError,
    TableSpec,
    load_profile,
    save_profile,
)
from torchrec_hot.data.chunk import FeatureIds, IdChunk
from torchrec_hot.profiling.io import FORMAT_VERSION

PROPS = settings(max_examples=25, deadline=None, derandomize=True)


def _profile(rows, ids_per_table, big, seed, **kwargs):
    """A profile of tables of `rows`, each fed `ids_per_table[i]` uniform ids over
    `min(rows, 1 + ids)` distinct rows (so some tables are sparse, some dense) in 2 windows,
    plus `big[i]` extra lookups on row 0 (to need uint16/uint32/int64 counts). Returns the
    profile and the reference counts (np.bincount) per window."""
    rng = np.random.default_rng(seed)
    tables = [TableSpec(f"t{i}", n, 4, (f"f{i}",)) for i, n in enumerate(rows)]
    profile = PopularityProfile(tables, trace_run_batches=1, seed=seed, **kwargs)
    ref = {}
    for w in ("mon", "tue"):
        feats, ref[w] = {}, {}
        for t, m in zip(tables, ids_per_table, strict=True):
            spread = min(t.num_embeddings, 1 + m)
            ids = rng.integers(0, spread, size=m) * (t.num_embeddings // spread)
            feats[t.feature_names[0]] = ids
            ref[w][t.name] = np.bincount(ids, minlength=t.num_embeddings)
        n = len(ids_per_table) and max(ids_per_table)
        chunk = IdChunk(n, {
            f: FeatureIds(torch.from_numpy(v), torch.from_numpy(
                np.bincount(rng.integers(0, n, size=v.size), minlength=n)) if n else None)
            for f, v in feats.items()
        })
        profile.update_chunk(chunk, w, batch_size=max(1, n // 3))
    for t, extra in zip(tables, big, strict=True):
        if extra:
            add = np.zeros(t.num_embeddings, dtype=np.int64)
            add[0] = extra
            profile.window_data("tue").counters[t.name].add_counts(add)
            ref["tue"][t.name][0] += extra
    return profile, ref


tables_st = st.lists(
    st.tuples(
        st.integers(1, 5000),  # rows
        st.integers(0, 3000),  # ids per window
        st.sampled_from([0, 300, 70_000, 5_000_000_000]),  # extra lookups on row 0
    ),
    min_size=1,
    max_size=4,
)


@PROPS
@given(tables=tables_st, seed=st.integers(0, 2**31))
def test_roundtrip_is_exact_and_each_table_takes_the_smaller_layout(tmp_path_factory, tables,
                                                                    seed):
    rows, ids, big = zip(*tables, strict=True)
    profile, ref = _profile(rows, ids, big, seed, trace_max_ids=2000)
    path = tmp_path_factory.mktemp("fmt") / "p.npz"
    save_profile(profile, path)
    loaded = load_profile(path)
    assert_same_profile(profile, loaded)
    for w, per_table in ref.items():
        for name, counts in per_table.items():
            np.testing.assert_array_equal(loaded.counts(name, w), counts)
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        assert meta["format_version"] == FORMAT_VERSION == 3
        for j, w in enumerate(meta["windows"]):
            for i, t in enumerate(profile.tables):
                counts = ref[w["name"]][t.name]
                # plain reference: numpy's smallest unsigned type, uint32 row numbers
                cdt = np.min_scalar_type(int(counts.max()))
                cbytes = 8 if cdt.itemsize == 8 else cdt.itemsize
                nnz = int(np.count_nonzero(counts))
                sparse, dense = nnz * (4 + cbytes), t.num_embeddings * cbytes
                stored = sum(z[k].nbytes for k in (f"w{j}_counts_{i}", f"w{j}_rows_{i}")
                             if k in z.files)
                assert stored == min(sparse, dense)
                assert w["layouts"][i] == ("sparse" if sparse < dense else "dense")


@settings(max_examples=8, deadline=None, derandomize=True)
@given(ids=st.integers(0, 2000), rows=st.sampled_from([10**5, 10**6, 4 * 10**6]),
       seed=st.integers(0, 2**31))
def test_file_bytes_grow_with_counted_rows_not_with_rows(tmp_path_factory, ids, rows, seed):
    """The same draws counted in a table of 20,000 rows and of `rows` rows: the files differ by
    the digits of the row count only, and take a few bytes per counted row."""
    d = tmp_path_factory.mktemp("size")
    small, _ = _profile([20_000], [ids], [0], seed, trace_max_ids=0)
    large, ref = _profile([rows], [ids], [0], seed, trace_max_ids=0)
    save_profile(small, d / "s.npz")
    save_profile(large, d / "l.npz")
    counted = sum(int(np.count_nonzero(c["t0"])) for c in ref.values())
    size_small, size_large = (d / "s.npz").stat().st_size, (d / "l.npz").stat().st_size
    assert abs(size_large - size_small) <= 4 * 8  # meta is UTF-32: 4 bytes per digit
    assert size_large <= 4096 + 8 * counted  # meta and zip headers + (row, count) pairs


def _as_format_2(path: Path, out: Path) -> None:
    """Rewrites a format-3 file as torchrec-hot 0.2 wrote it: dense int32/int64 counts, int64
    trace ids, no `layouts`, format_version 2."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    meta["format_version"] = 2
    for j, w in enumerate(meta["windows"]):
        for i, layout in enumerate(w.pop("layouts")):
            t = meta["tables"][i]
            if layout == "sketch":
                continue
            counts = arrays.pop(f"w{j}_counts_{i}").astype(np.int64)
            if layout == "sparse":
                dense = np.zeros(t["num_embeddings"], dtype=np.int64)
                dense[arrays.pop(f"w{j}_rows_{i}")] = counts
                counts = dense
            arrays[f"w{j}_counts_{i}"] = counts.astype(
                np.int32 if w["totals"][i] < 2**31 else np.int64)
    for k in [k for k in arrays if k.startswith("trace_ids_")]:
        arrays[k] = arrays[k].astype(np.int64)
    np.savez(out, meta=np.array(json.dumps(meta)), **arrays)


def test_format_2_files_still_load(tmp_path: Path):
    profile, ref = _profile([50, 100_000, 7], [400, 300, 900], [5_000_000_000, 70_000, 0], 3,
                            sketch_capacities={"t2": 4}, trace_max_ids=5000)
    save_profile(profile, tmp_path / "v3.npz")
    _as_format_2(tmp_path / "v3.npz", tmp_path / "v2.npz")
    with np.load(tmp_path / "v2.npz") as z:
        assert json.loads(str(z["meta"]))["format_version"] == 2
        assert z["w0_counts_1"].shape == (100_000,) and z["trace_ids_0"].dtype == np.int64
    assert_same_profile(profile, load_profile(tmp_path / "v2.npz"))


def _saved(tmp_path: Path):
    profile, _ = _profile([50, 100_000], [400, 300], [0, 0], 5)
    save_profile(profile, tmp_path / "p.npz")
    with np.load(tmp_path / "p.npz") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    assert meta["windows"][0]["layouts"] == ["dense", "sparse"]
    return arrays, meta


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a, m: a.update(w0_rows_1=a["w0_rows_1"][::-1].copy()), "inconsistent"),
        (lambda a, m: a["w0_rows_1"].__setitem__(-1, 100_000), "inconsistent"),
        (lambda a, m: a["w0_counts_1"].__setitem__(0, 0), "inconsistent"),
        (lambda a, m: a.pop("w0_rows_1"), "w0_rows_1"),
        (lambda a, m: a.update(w0_rows_1=a["w0_rows_1"][1:]), "do not match"),
        (lambda a, m: a.update(w0_counts_0=a["w0_counts_0"][1:]), "shape"),
        (lambda a, m: a.update(w0_counts_0=a["w0_counts_0"].astype(np.float32)), "dtype"),
        (lambda a, m: a.update(w0_counts_0=a["w0_counts_0"].astype(np.int32) * -1), "negative"),
        (lambda a, m: m["windows"][0]["layouts"].__setitem__(0, "zigzag"), "zigzag"),
        (lambda a, m: m["windows"][0]["totals"].__setitem__(1, 1), "add up to"),
        (lambda a, m: a.update(trace_ids_0=a["trace_ids_0"].astype(np.float64)), "trace"),
    ],
)
def test_bad_format_3_files_are_one_line_errors_naming_the_file(tmp_path, change, message):
    arrays, meta = _saved(tmp_path)
    change(arrays, meta)
    arrays["meta"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(ProfileFormatError, match=message) as err:
        load_profile(bad)
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_truncated_and_bit_flipped_files_are_refused(tmp_path):
    _saved(tmp_path)
    data = (tmp_path / "p.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ProfileFormatError, match="corrupt or truncated"):
        load_profile(tmp_path / "cut.npz")
    with zipfile.ZipFile(tmp_path / "p.npz") as z:
        info = z.getinfo("w0_rows_1.npy")
    flipped = bytearray(data)
    flipped[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF  # in the data
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(ProfileFormatError, match="corrupt or truncated") as err:
        load_profile(tmp_path / "flip.npz")
    assert str(tmp_path / "flip.npz") in str(err.value)
