"""The accelerator path of the KJT remap (`remap.py`): all features at once, no host sync.

A fixed number of vectorised ops over all ids of all features. All split tables' hot ids live in
one sorted int64 buffer, table `t` shifted by the row counts of the split tables before it, so one
`searchsorted` gives every id's `pos = #(h < v)`, hence the slot (`pos` when `h[pos] == v`) and
the compact cold index (`v - pos`). Each id's destination in the output is the start of its
output row plus its rank among its half's ids of the row, from cumulative sums; one permutation
then moves values and weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_hot.sharding.remap.layout import RemapLayout, output_kjt


def _complete_cumsum(t: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n + 1,) int64 inclusive cumsum with a leading 0."""
    return F.pad(torch.cumsum(t, 0), (1, 0))


def rows_and_keys(kjt: KeyedJaggedTensor, layout: RemapLayout) -> tuple[torch.Tensor, ...]:
    """(row, key): the input row (bag) and the input key of every id, int64 (n_ids,) each."""
    values, lengths = kjt.values(), kjt.lengths().long()
    row = torch.repeat_interleave(
        torch.arange(lengths.numel(), device=values.device), lengths, output_size=values.numel()
    )
    return row, layout.key_of_row.index_select(0, row)


def remap_vectorised(
    kjt: KeyedJaggedTensor,
    layout: RemapLayout,
    hot_merged: torch.Tensor,
    row_key: tuple[torch.Tensor, ...] | None = None,
) -> KeyedJaggedTensor:
    """The split KJT of `kjt` (layout `layout`); `hot_merged`: the merged sorted hot ids;
    `row_key`: `rows_and_keys(kjt, layout)` when the caller has it already (validation)."""
    values = kjt.values()
    lengths = kjt.lengths().long()
    weights = kjt.weights_or_none()
    device = values.device
    ids = torch.arange(values.numel(), device=device)
    row, key = row_key if row_key is not None else rows_and_keys(kjt, layout)

    if layout.any_mean:
        inv_len = (1.0 / lengths.float()).index_select(0, row)
        inv_len = torch.where(layout.is_mean.index_select(0, key), inv_len, 1.0)
        weights = inv_len if weights is None else weights * inv_len

    if not layout.any_split:
        return output_kjt(kjt, layout, values, kjt.lengths(), weights)

    v = values.long()
    split = layout.is_split.index_select(0, key)
    merged_ids = v + layout.id_base.index_select(0, key)
    hot_ids = hot_merged.to(device)  # stays on CPU when built on meta
    pos_merged = torch.searchsorted(hot_ids, merged_ids)
    at = pos_merged.clamp(max=hot_ids.numel() - 1)
    hot = hot_ids.index_select(0, at) == merged_ids
    pos = pos_merged - layout.hot_start.index_select(0, key)  # #(table's hot ids < v)
    hot = hot & split
    first = hot | ~split  # goes to the hot half, or passes through
    new_values = torch.where(split, torch.where(hot, pos, v - pos), v).to(values.dtype)

    offsets = _complete_cumsum(lengths)  # (R + 1,)
    first_before = _complete_cumsum(first.long())  # (n + 1,): #first ids before i
    first_at_row = first_before.index_select(0, offsets)  # (R + 1,)
    first_len = first_at_row[1:] - first_at_row[:-1]
    second_len = lengths - first_len
    out_len = torch.cat([first_len, second_len]).index_select(0, layout.stream_rows)
    out_offsets = _complete_cumsum(out_len)
    # destination of id i = start of its output row + its rank among its half's ids
    first_base = out_offsets.index_select(0, layout.first_row) - first_at_row[:-1]
    second_base = out_offsets.index_select(0, layout.second_row) - (
        offsets[:-1] - first_at_row[:-1]
    )
    c = first_before[:-1]
    dest = torch.where(
        first,
        first_base.index_select(0, row) + c,
        second_base.index_select(0, row) + ids - c,
    )
    perm = torch.empty_like(dest).index_copy_(0, dest, ids)  # output slot -> input id
    out_values = new_values.index_select(0, perm)
    out_weights = None if weights is None else weights.index_select(0, perm)
    return output_kjt(kjt, layout, out_values, out_len.to(kjt.lengths().dtype), out_weights)
