"""Per-input-layout index data of the KJT remap (`remap.py`), and the output KJT.

A `RemapLayout` holds, for one (keys, strides) layout of input KJTs, the output keys and the
small per-row / per-key index tensors that both remap paths (`remap_cpu.py`,
`remap_vectorised.py`) read. It is built on the host from the KJT's strides by `build_layout`
(tensors copied to the device through pinned memory, without blocking) and cached by the
remapper. `output_kjt` assembles the remapped KJT from its values, lengths and weights.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Collection, Mapping

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_hot.tables.split import COLD_SUFFIX, HOT_SUFFIX


def _host_tensor(data: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.tensor(data, dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclasses.dataclass(frozen=True)
class RemapLayout:
    """Index tensors for one (keys, strides) input layout. R = input rows (sum of strides),
    R' = output rows, F = input keys."""

    keys: list[str]  # output keys
    key_of_row: torch.Tensor  # (R,) int64: input key index of each input row
    first_row: torch.Tensor  # (R,) int64: output row of the hot (or pass-through) half
    second_row: torch.Tensor  # (R,) int64: output row of the cold half (= first_row if unsplit)
    stream_rows: torch.Tensor  # (R',) int64: index into cat(first_lengths, second_lengths)
    key_source: torch.Tensor  # (F',) int64: input key index of each output key
    out_slot: torch.Tensor  # (F',) int64: 2 x input key (+ 1 for a cold half)
    is_split: torch.Tensor  # (F,) bool
    id_base: torch.Tensor  # (F,) int64: offset of the key's table in the merged hot-id buffer
    hot_start: torch.Tensor  # (F,) int64: first position of the table's ids in that buffer
    hot_rows: torch.Tensor  # (F,) int64: H of the key's split table (0 when not split)
    is_mean: torch.Tensor  # (F,) bool: ids get weight 1 / L
    num_embeddings: torch.Tensor  # (F,) int64: table rows (-1: unknown key, not validated)
    any_split: bool
    any_mean: bool
    spkpr: list[list[int]] | None  # output stride_per_key_per_rank (VBE only)
    row_bounds: list[int]  # (F + 1,) host: input rows of key k are row_bounds[k]:row_bounds[k+1]
    key_info: list[tuple[str | None, int, bool]]  # per input key: (split table, H, MEAN)


def build_layout(
    keys: list[str],
    strides: list[int],
    spkpr: list[list[int]] | None,
    device: torch.device,
    table_of_feature: Mapping[str, str],
    num_embeddings: Mapping[str, int],
    id_base: Mapping[str, int],
    hot_span: Mapping[str, tuple[int, int]],
    mean_features: Collection[str],
) -> RemapLayout:
    """The layout of input `keys` with per-key `strides` (and VBE `spkpr`, else None) on
    `device`. `table_of_feature`, `num_embeddings` and `mean_features` as for `KJTRemapper`;
    `id_base` / `hot_span`: per split table, its offset in the merged id space and its
    [start, end) positions in the merged hot-id buffer."""

    def is_split(key: str) -> bool:
        return table_of_feature.get(key) in hot_span

    out_keys, key_source, out_slot, out_spkpr = [], [], [], []
    key_of_row, first_row, second_row, stream_rows = [], [], [], []
    n_rows, in_row, out_row = sum(strides), 0, 0
    for k, (key, stride) in enumerate(zip(keys, strides, strict=True)):
        rows_in = list(range(in_row, in_row + stride))
        first = list(range(out_row, out_row + stride))
        key_of_row += [k] * stride
        first_row += first
        if is_split(key):
            second = [r + stride for r in first]
            stream_rows += rows_in + [n_rows + r for r in rows_in]
            out_keys += [key + HOT_SUFFIX, key + COLD_SUFFIX]
            key_source += [k, k]
            out_slot += [2 * k, 2 * k + 1]
            out_row += 2 * stride
        else:
            second = first
            stream_rows += rows_in
            out_keys.append(key)
            key_source.append(k)
            out_slot.append(2 * k)
            out_row += stride
        second_row += second
        if spkpr is not None:
            out_spkpr += [spkpr[k]] * (len(out_keys) - len(out_spkpr))
        in_row += stride

    tables = [table_of_feature.get(key) for key in keys]
    i64 = torch.int64
    return RemapLayout(
        keys=out_keys,
        key_of_row=_host_tensor(key_of_row, i64, device),
        first_row=_host_tensor(first_row, i64, device),
        second_row=_host_tensor(second_row, i64, device),
        stream_rows=_host_tensor(stream_rows, i64, device),
        key_source=_host_tensor(key_source, i64, device),
        out_slot=_host_tensor(out_slot, i64, device),
        is_split=_host_tensor([is_split(k) for k in keys], torch.bool, device),
        id_base=_host_tensor([id_base.get(t, 0) for t in tables], i64, device),
        hot_start=_host_tensor([hot_span.get(t, (0, 0))[0] for t in tables], i64, device),
        hot_rows=_host_tensor(
            [hot_span[t][1] - hot_span[t][0] if t in hot_span else 0 for t in tables], i64, device
        ),
        is_mean=_host_tensor([k in mean_features for k in keys], torch.bool, device),
        num_embeddings=_host_tensor(
            [num_embeddings.get(t, -1) if t else -1 for t in tables], i64, device
        ),
        any_split=any(is_split(k) for k in keys),
        any_mean=any(k in mean_features for k in keys),
        spkpr=out_spkpr if spkpr is not None else None,
        row_bounds=[0, *itertools.accumulate(strides)],
        key_info=[
            (
                t if is_split(k) else None,
                hot_span[t][1] - hot_span[t][0] if is_split(k) else 0,
                k in mean_features,
            )
            for k, t in zip(keys, tables, strict=True)
        ],
    )


def output_kjt(
    kjt: KeyedJaggedTensor,
    layout: RemapLayout,
    values: torch.Tensor,
    lengths: torch.Tensor,
    weights: torch.Tensor | None,
    length_per_key: list[int] | None = None,
) -> KeyedJaggedTensor:
    """The output KJT of input `kjt`; `length_per_key` when known. No per-key JaggedTensors:
    building them costs about as much as a small remap, and no lookup reads them (the
    unsharded forward slices values and offsets, TorchRec's input dist splits the KJT)."""
    inverse = kjt.inverse_indices_or_none()
    if inverse is not None:
        inverse = (layout.keys, inverse[1][layout.key_source])
    return KeyedJaggedTensor(
        keys=layout.keys,
        values=values,
        weights=weights,
        lengths=lengths,
        stride=None if layout.spkpr is not None else kjt.stride(),
        stride_per_key_per_rank=layout.spkpr,
        length_per_key=length_per_key,
        offset_per_key=None
        if length_per_key is None
        else [0, *itertools.accumulate(length_per_key)],
        inverse_indices=inverse,
    )
