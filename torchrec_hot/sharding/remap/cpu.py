"""The CPU path of the KJT remap (`remap.py`): feature by feature, through dense code tables.

A feature's ids are one contiguous slice of the KJT's values, so each feature is split on its
own: host syncs cost nothing on CPU, slices of a few thousand ids stay in cache, and no
full-length temporary is allocated. Each split table has a code table (`code[v]` is v's position
in (hot ids, cold ids); see `KJTRemapper._code_table`), so one gather and `code < H` split a
feature, then `masked_select_jagged_1d` (or, when every bag holds one id, as in Criteo, two
masked selects). The output KJT carries its per-key lengths.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_hot.sharding.remap.layout import RemapLayout, output_kjt


def remap_per_key(
    kjt: KeyedJaggedTensor,
    layout: RemapLayout,
    code_table: Callable[[str], torch.Tensor],
) -> KeyedJaggedTensor:
    """The split KJT of `kjt` (layout `layout`); `code_table(table)` gives split `table`'s
    (N,) CPU code table."""
    values, lengths, weights = kjt.values(), kjt.lengths(), kjt.weights_or_none()
    bounds = [0, *itertools.accumulate(kjt.length_per_key())]  # key k: values[b[k]:b[k+1]]
    at_most_one = lengths.numel() == 0 or int(lengths.max()) <= 1
    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    for k, (table, num_hot, mean) in enumerate(layout.key_info):
        v = values[bounds[k] : bounds[k + 1]]
        lens = lengths[layout.row_bounds[k] : layout.row_bounds[k + 1]]
        w = None if weights is None else weights[bounds[k] : bounds[k + 1]]
        if mean:
            inv_len = (1.0 / lens.float()).repeat_interleave(lens, output_size=v.numel())
            w = inv_len if w is None else w * inv_len
        elif layout.any_mean and w is None:
            w = torch.ones(v.numel())
        if table is None:
            parts.append((v, lens, w))
            continue
        code = code_table(table).index_select(0, v).to(values.dtype)
        hot = code < num_hot
        if at_most_one and v.numel() == lens.numel():  # one id per bag: id i is bag i
            hot_values, hot_lens = code.masked_select(hot), hot.to(lens.dtype)
        else:
            hot_values, hot_lens = torch.ops.fbgemm.masked_select_jagged_1d(code, lens, hot)
        cold = ~hot
        parts.append((hot_values, hot_lens, None if w is None else w.masked_select(hot)))
        cold_w = None if w is None else w.masked_select(cold)
        parts.append((code.masked_select(cold).sub_(num_hot), lens - hot_lens, cold_w))
    out_weights = None if parts[0][2] is None else torch.cat([w for _, _, w in parts])
    values = torch.cat([v for v, _, _ in parts])
    lengths = torch.cat([n for _, n, _ in parts])
    return output_kjt(kjt, layout, values, lengths, out_weights, [v.numel() for v, _, _ in parts])
