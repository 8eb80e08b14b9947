"""The CPU path of the KJT remap for small inputs (`remap.py`): all features in one numpy pass.

At a few hundred ids per feature the per-feature path (`remap_cpu.py`) spends its time in op
dispatch: about ten torch ops per feature at ~5-10 us each, 0.83 ms for 26 features x 512 ids
with validation, measured on a 2-core Xeon. numpy calls cost ~1 us, so here every id of every
feature goes through one fixed sequence of numpy calls over the whole batch (0.48 ms for the
same input, output KJT included; 26 x 1024: 0.89 vs 0.98 ms). Past ~32k ids the full-length
temporaries leave the cache and the per-feature path wins again (26 x 2048: 1.2 ms per feature,
1.6 ms here; 26 x 4096: 1.7 vs 3.3 ms), hence `KJTRemapper`'s size switch.

One pass: per-key min/max validation (`np.minimum.reduceat`), one gather from the concatenated
code tables of all split tables (`code[v]` is v's position in (hot ids, cold ids) of its table),
a radix-sorted stable permutation by (key, half) that puts every id at its output place (ids of
one key are contiguous and in bag order, so a stable sort by key * 2 + is_cold keeps each half's
ids in bag order), and the per-bag counts of each half from one cumulative sum. Results are
identical to the per-feature path's, dtypes included (tests/test_remap.py). Weights that require
gradients and variable batch per feature (VBE) take the per-feature path.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_hot.sharding.remap_layout import RemapLayout, output_kjt


@dataclass(frozen=True)
class _HostLayout:
    """numpy index data of one `RemapLayout` for this path. F input keys, R input rows."""

    base: np.ndarray  # (F,) int64: offset of the key's split table in the concatenated codes
    hot_rows: np.ndarray  # (F,) int64: H of the key's split table (0 when not split)
    is_split: np.ndarray  # (F,) bool
    num_rows: np.ndarray  # (F,) int64: table rows, -1 for keys that are not validated
    mean_row: np.ndarray  # (R,) bool: the row's key is MEAN-pooled
    stream_rows: np.ndarray  # (R',) int64: as `RemapLayout.stream_rows`
    out_slots: np.ndarray  # (F',) int64: (key * 2 + is_cold) of each output key
    sort_dtype: type  # int16 while 2F fits (numpy's stable sort is a radix sort there)


def _host_layout(
    layout: RemapLayout, code_base: Mapping[str, int], hot_span: Mapping[str, tuple[int, int]]
) -> _HostLayout:
    """Built once per layout (hot-set sizes never change: `KJTRemapper.set_hot_ids`)."""
    cached = layout.host_cache.get("batched")
    if cached is not None:
        return cached
    tables = [table for table, _, _ in layout.key_info]
    strides = [b - a for a, b in itertools.pairwise(layout.row_bounds)]
    slots: list[int] = []
    for k, table in enumerate(tables):
        slots += [2 * k, 2 * k + 1] if table is not None else [2 * k]
    host = _HostLayout(
        base=np.array([code_base.get(t, 0) if t else 0 for t in tables], dtype=np.int64),
        hot_rows=np.array(
            [hot_span[t][1] - hot_span[t][0] if t else 0 for t in tables], dtype=np.int64
        ),
        is_split=np.array([t is not None for t in tables], dtype=bool),
        num_rows=np.array([n for _, n, _ in layout.key_info], dtype=np.int64),
        mean_row=np.repeat(
            np.array([mean for _, _, mean in layout.key_info], dtype=bool), strides
        ),
        stream_rows=layout.stream_rows.cpu().numpy(),
        out_slots=np.array(slots, dtype=np.int64),
        sort_dtype=np.int16 if 2 * len(tables) < 2**15 else np.int64,
    )
    layout.host_cache["batched"] = host
    return host


def remap_batched(
    kjt: KeyedJaggedTensor,
    layout: RemapLayout,
    codes: np.ndarray,
    code_base: Mapping[str, int],
    hot_span: Mapping[str, tuple[int, int]],
    validate: bool,
    raise_bad_id: Callable[[KeyedJaggedTensor, int, torch.Tensor], None],
) -> KeyedJaggedTensor:
    """The split KJT of CPU `kjt` (layout `layout`, no VBE). `codes`: the code tables of all
    split tables concatenated, table t's at `code_base[t]`; `hot_span[t]`: [start, end) of its
    hot ids. With `validate`, first raises through `raise_bad_id(kjt, key index, key's values)`
    for the first key (in key order) holding an id < 0 or >= its table's rows."""
    host = _host_layout(layout, code_base, hot_span)
    values_t, lengths_t, weights_t = kjt.values(), kjt.lengths(), kjt.weights_or_none()
    v, lengths = values_t.numpy(), lengths_t.numpy()
    per_key = np.fromiter(kjt.length_per_key(), dtype=np.int64, count=len(layout.key_info))
    bounds = np.concatenate(([0], np.cumsum(per_key)))
    if validate and v.size:
        nonempty = np.flatnonzero(per_key)  # reduceat's segments: nonempty keys only
        lo = np.minimum.reduceat(v, bounds[nonempty])
        hi = np.maximum.reduceat(v, bounds[nonempty])
        n = host.num_rows[nonempty]
        bad = (n >= 0) & ((lo < 0) | (hi >= n))
        if bad.any():
            k = int(nonempty[np.argmax(bad)])
            raise_bad_id(kjt, k, values_t[int(bounds[k]) : int(bounds[k + 1])])

    key = np.repeat(np.arange(len(per_key), dtype=host.sort_dtype), per_key)
    if layout.any_split:
        split = host.is_split[key]
        code = codes.take(np.where(split, v + host.base[key], 0))
        h = host.hot_rows[key]
        cold = split & (code >= h)
        new_v = np.where(split, code - np.where(cold, h, 0), v).astype(v.dtype, copy=False)
        slot = key * 2 + cold.astype(host.sort_dtype)
        perm = np.argsort(slot, kind="stable")
        out_v = new_v[perm]
    else:
        cold = np.zeros(v.size, dtype=bool)
        slot, perm, out_v = key * 2, None, v

    w = None if weights_t is None else weights_t.detach().numpy()
    if layout.any_mean:  # weight 1 / L on MEAN keys' ids (times their own weight)
        inv_row = np.ones(lengths.size, dtype=np.float32)
        mean = host.mean_row & (lengths > 0)
        inv_row[mean] = np.float32(1.0) / lengths[mean].astype(np.float32)
        inv = np.repeat(inv_row, lengths)
        w = inv if w is None else np.where(np.repeat(host.mean_row, lengths), w * inv, w)
    if w is not None and perm is not None:
        w = w[perm]

    if v.size == lengths.size and (lengths.size == 0 or int(lengths.max()) <= 1):
        first_len = (~cold).astype(lengths.dtype)  # one id per bag: id i is bag i
    else:
        before = np.concatenate(([0], np.cumsum(~cold)))
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        first_len = (before[offsets[1:]] - before[offsets[:-1]]).astype(lengths.dtype)
    out_len = np.concatenate([first_len, lengths - first_len])[host.stream_rows]

    length_per_key = np.bincount(slot, minlength=2 * len(per_key))[host.out_slots].tolist()
    values_out = torch.from_numpy(out_v)
    lengths_out = torch.from_numpy(out_len)
    weights_out = None if w is None else torch.from_numpy(w)
    # No per-key JaggedTensors: building them costs as much as the remap here (~8 us each),
    # and only an unsharded lookup reads them (KJT.to_dict builds them then).
    return output_kjt(kjt, layout, values_out, lengths_out, weights_out, length_per_key)
