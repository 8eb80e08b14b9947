"""Hypothesis strategies and builders for the id remap: table layouts, KJTs, hot ids, remappers
of each path, and a per-feature reference."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from torchrec import KeyedJaggedTensor

from torchrec_hot.sharding.remap.remapper import (
    KJTRemapper,
)
from torchrec_hot.tables.split import COLD_SUFFIX, HOT_SUFFIX


@st.composite
def layouts(draw):
    """Tables (N, H, features) and a KJT shape; features of one table share its hot ids."""
    n_tables = draw(st.integers(1, 3))
    tables = []
    for t in range(n_tables):
        n = draw(st.integers(1, 40))
        h = draw(st.integers(0, n))
        n_features = draw(st.integers(1, 3))
        tables.append((f"t{t}", n, h, [f"t{t}_f{i}" for i in range(n_features)]))
    return {
        "tables": tables,
        "batch": draw(st.integers(1, 6)),
        "max_len": draw(st.integers(0, 4)),
        "weighted": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.int32, torch.int64])),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def random_kjt(layout, gen: torch.Generator, strides=None) -> KeyedJaggedTensor:
    keys, lengths, values = [], [], []
    features = [(f, n) for _, n, _, fs in layout["tables"] for f in fs]
    perm = torch.randperm(len(features), generator=gen).tolist()  # key order != table order
    for i in perm:
        f, n = features[i]
        b = layout["batch"] if strides is None else strides[f]
        lens = torch.randint(0, layout["max_len"] + 1, (b,), generator=gen)
        keys.append(f)
        lengths.append(lens)
        values.append(torch.randint(0, n, (int(lens.sum()),), generator=gen))
    dtype = layout["dtype"]
    vals = torch.cat(values).to(dtype)
    kwargs = {}
    if strides is not None:
        kwargs["stride_per_key_per_rank"] = [[strides[k]] for k in keys]
    return KeyedJaggedTensor(
        keys=keys,
        values=vals,
        lengths=torch.cat(lengths).to(dtype),
        weights=torch.rand(vals.numel(), generator=gen) if layout["weighted"] else None,
        **kwargs,
    )


def random_hot_ids(layout, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        name: torch.randperm(n, generator=gen)[:h].sort().values
        for name, n, h, _ in layout["tables"]
    }


CPU_PATHS = {  # KJTRemapper arguments of each remap path
    "cpu batched": {"cpu_rank_table": True, "cpu_batched_max_ids": 1 << 30},
    "cpu per feature": {"cpu_rank_table": True, "cpu_batched_max_ids": 0},
    "vectorised": {"cpu_rank_table": False},
}


def make_remapper(layout, hot: dict[str, torch.Tensor], mean=(), path="cpu batched") -> KJTRemapper:
    return KJTRemapper(
        table_of_feature={f: name for name, _, _, fs in layout["tables"] for f in fs},
        num_embeddings={name: n for name, n, _, _ in layout["tables"]},
        hot_ids={name: hot[name] for name, n, h, _ in layout["tables"] if 0 < h < n},
        mean_features=mean,
        **CPU_PATHS[path],
    )


def reference(kjt: KeyedJaggedTensor, layout, hot: dict[str, torch.Tensor]) -> dict:
    """key -> (lengths, values, weights) of the expected split KJT, in expected key order."""
    table = {f: (name, n, h) for name, n, h, fs in layout["tables"] for f in fs}
    out = {}
    for key, jt in kjt.to_dict().items():
        name, n, h = table[key]
        lengths, values, weights = jt.lengths(), jt.values(), jt.weights_or_none()
        if not 0 < h < n:
            out[key] = (lengths, values, weights)
            continue
        hot_np = hot[name].numpy()
        cold_np = np.setdiff1d(np.arange(n), hot_np)
        v = values.long().numpy()
        is_hot = torch.from_numpy(np.isin(v, hot_np))
        slot = torch.from_numpy(np.searchsorted(hot_np, v)).to(values.dtype)
        cold_idx = torch.from_numpy(np.searchsorted(cold_np, v)).to(values.dtype)
        for suffix, ids, mask in ((HOT_SUFFIX, slot, is_hot), (COLD_SUFFIX, cold_idx, ~is_hot)):
            vals, lens = torch.ops.fbgemm.masked_select_jagged_1d(ids, lengths, mask)
            w = None
            if weights is not None:
                w, _ = torch.ops.fbgemm.masked_select_jagged_1d(weights, lengths, mask)
            out[key + suffix] = (lens, vals, w)
    return out


def assert_matches(out: KeyedJaggedTensor, expected: dict) -> None:
    assert out.keys() == list(expected)
    got = out.to_dict()
    for key, (lengths, values, weights) in expected.items():
        assert torch.equal(got[key].lengths(), lengths), key
        assert got[key].values().dtype == values.dtype
        assert torch.equal(got[key].values(), values), key
        if weights is None:
            assert got[key].weights_or_none() is None
        else:
            assert torch.equal(got[key].weights(), weights), key
