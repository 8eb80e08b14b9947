"""Remap a KeyedJaggedTensor from logical tables to hot/cold split tables (pure tensor code).

A feature `f` of a split logical table `T` (N rows, sorted hot ids `h`, H = len(h)) becomes two
features of the output KJT, in this order, at the place `f` had:

* `f__hot`:  the ids of `f` that are hot, each replaced by its hot slot `j` (`h[j] == v`), 0..H-1;
* `f__cold`: the other ids, each replaced by its compact cold index `v - #(h < v)`, 0..N-H-1.

Each sample keeps its bag: sample `b` of `f__hot` holds the hot ids of sample `b` of `f`, in
their original order; likewise for `f__cold`. Per-id weights travel with their ids. Features of
tables that are not split pass through unchanged.

Accelerators (no host sync): a fixed number of vectorised ops over all ids of all features. All
split tables' hot ids live in one sorted int64 buffer (8 bytes per hot row), table `t` shifted by
the row counts of the split tables before it, so one `searchsorted` gives every id's
`pos = #(h < v)`, hence the slot (`pos` when `h[pos] == v`) and the cold index (`v - pos`).
Small per-row index tensors are built on the host from the KJT's strides and cached per
(keys, strides) layout (copied through pinned memory, without blocking).
CPU (default): feature by feature, since a feature's ids are one contiguous slice of the values:
host syncs cost nothing there, slices of a few thousand ids stay in cache, and no full-length
temporary is allocated (glibc serves each fresh buffer over ~128 KiB with new, page-faulting
pages: the vectorised path measured 20 ms for 26 x 4096 ids, this one 4-5 ms). Each split table
gets a code table (int32, 4 bytes per row, host memory, built on first CPU use): `code[v]` is
v's position in (hot ids, cold ids), so one gather and `code < H` split a feature (searchsorted's
CPU kernel costs ~200 ns per id), then `masked_select_jagged_1d` (or, when every bag holds one
id, as in Criteo, two masked selects). The output KJT carries its per-key JaggedTensors. Both
paths give the same KJT.

MEAN pooling: features listed in `mean_features` additionally get per-id weights `1 / L` (times
their own weight, if the KJT is weighted), where `L` is the sample's length before the split, so a
SUM lookup of the two halves yields the mean of the logical bag (an empty bag has no ids: 0).
Per id this is the arithmetic of `nn.EmbeddingBag(mode="mean")`'s CPU backward (gradient row +=
float(1/L) * grad, one fused multiply-add) and of FBGEMM 1.8's CPU MEAN TBE (forward and SGD update
measured bit-identical to a weighted SUM TBE with these weights). Dividing the pooled sum by `L`
instead is mathematically the same but rounds differently (1 ulp in the gradient).

Variable batch size per feature (VBE: `stride_per_key_per_rank`, optional `inverse_indices`) is
passed through: both halves of `f` get `f`'s strides and inverse indices. An unsharded TorchRec
`EmbeddingBagCollection` accepts such a KJT on CPU (it expands pooled outputs by the inverse
indices), and so does the remap.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import OrderedDict
from collections.abc import Collection, Mapping

import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from torchrec_hot.sharding.split import COLD_SUFFIX, HOT_SUFFIX

_LAYOUT_CACHE_SIZE = 16


def cold_mask(hot_ids: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """(num_embeddings,) bool: True for rows that are not in `hot_ids`."""
    mask = torch.ones(num_embeddings, dtype=torch.bool, device=hot_ids.device)
    mask[hot_ids] = False
    return mask


def split_rows(full: torch.Tensor, hot_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a logical (N, ...) tensor into its hot rows (H, ...) and cold rows (N - H, ...),
    in hot-slot and compact-cold-index order."""
    hot_ids = hot_ids.to(full.device)
    return full[hot_ids], full[cold_mask(hot_ids, full.shape[0])]


def merge_rows(hot: torch.Tensor, cold: torch.Tensor, hot_ids: torch.Tensor) -> torch.Tensor:
    """Inverse of `split_rows`: the logical (H + C, ...) tensor from hot (H, ...) and cold
    (C, ...) rows."""
    n = hot.shape[0] + cold.shape[0]
    hot_ids = hot_ids.to(hot.device)
    out = hot.new_empty((n, *hot.shape[1:]))
    out[hot_ids] = hot
    out[cold_mask(hot_ids, n)] = cold
    return out


def _complete_cumsum(t: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n + 1,) int64 inclusive cumsum with a leading 0."""
    return F.pad(torch.cumsum(t, 0), (1, 0))


def _host_tensor(data: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    t = torch.tensor(data, dtype=dtype)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Index tensors for one (keys, strides) input layout. R = input rows (sum of strides),
    R' = output rows, F = input keys."""

    keys: list[str]  # output keys
    key_of_row: torch.Tensor  # (R,) int64: input key index of each input row
    first_row: torch.Tensor  # (R,) int64: output row of the hot (or pass-through) half
    second_row: torch.Tensor  # (R,) int64: output row of the cold half (= first_row if unsplit)
    stream_rows: torch.Tensor  # (R',) int64: index into cat(first_lengths, second_lengths)
    key_source: torch.Tensor  # (F',) int64: input key index of each output key
    is_split: torch.Tensor  # (F,) bool
    id_base: torch.Tensor  # (F,) int64: offset of the key's table in the merged hot-id buffer
    hot_start: torch.Tensor  # (F,) int64: first position of the table's ids in that buffer
    is_mean: torch.Tensor  # (F,) bool: ids get weight 1 / L
    num_embeddings: torch.Tensor  # (F,) int64: table rows (-1: unknown key, not validated)
    any_split: bool
    any_mean: bool
    spkpr: list[list[int]] | None  # output stride_per_key_per_rank (VBE only)
    row_bounds: list[int]  # (F + 1,) host: input rows of key k are row_bounds[k]:row_bounds[k+1]
    key_info: list[tuple[str | None, int, bool]]  # per input key: (split table, N, MEAN)


class KJTRemapper(torch.nn.Module):
    """Turns a KJT of logical features into the KJT of their hot/cold split features.

    Args:
        table_of_feature: feature name -> logical table name, for every feature of the logical
            tables (features of other tables pass through and are not validated).
        num_embeddings: logical table name -> N (rows).
        hot_ids: split table name -> its sorted, unique int64 hot ids (H,), 0 < H < N. Tables not
            in this mapping are not split.
        mean_features: features whose ids get weight 1 / L (see module docstring).
        cpu_rank_table: on CPU, remap feature by feature through dense code tables (4 bytes
            per row of the split tables, host memory, built on first CPU use; see the module
            docstring) instead of the vectorised searchsorted path of accelerators, whose CPU
            kernel costs ~200 ns per id. Same results.

    The hot ids are kept in one non-persistent buffer (not in any state dict); `.to(device)` moves
    them with the module.
    """

    def __init__(
        self,
        table_of_feature: Mapping[str, str],
        num_embeddings: Mapping[str, int],
        hot_ids: Mapping[str, torch.Tensor],
        mean_features: Collection[str] = (),
        cpu_rank_table: bool = True,
    ) -> None:
        super().__init__()
        self._use_cpu_rank = cpu_rank_table
        self._codes: dict[str, torch.Tensor] = {}  # split table -> (N,) CPU code table
        self._table_of_feature = dict(table_of_feature)
        self._num_embeddings = {t: int(n) for t, n in num_embeddings.items()}
        self._mean_features = frozenset(mean_features)
        base, start = 0, 0
        self._id_base: dict[str, int] = {}
        self._hot_span: dict[str, tuple[int, int]] = {}
        shifted = []
        for table, ids in hot_ids.items():
            ids = torch.as_tensor(ids, dtype=torch.int64).detach().cpu()
            shifted.append(ids + base)
            self._id_base[table] = base
            self._hot_span[table] = (start, start + ids.numel())
            base += self._num_embeddings[table]
            start += ids.numel()
        merged = torch.cat(shifted) if shifted else torch.zeros(0, dtype=torch.int64)
        self.register_buffer("_hot_merged", merged, persistent=False)
        self._layouts: OrderedDict[tuple, _Layout] = OrderedDict()

    def hot_ids(self, table: str) -> torch.Tensor:
        """The sorted hot ids (H,) int64 of split table `table`, on the module's device."""
        start, end = self._hot_span[table]
        return self._hot_merged[start:end] - self._id_base[table]

    def set_hot_ids(self, table: str, hot_ids: torch.Tensor) -> None:
        """Replaces split table `table`'s hot ids by as many other sorted unique ids (for
        re-planning a running model; the tables' sizes do not change)."""
        start, end = self._hot_span[table]
        ids = torch.as_tensor(hot_ids, dtype=torch.int64).to(self._hot_merged.device)
        if ids.shape != (end - start,):
            raise ValueError(f"table {table!r}: expected {end - start} hot ids, got {ids.numel()}")
        if ids.numel() and (
            int(ids[0]) < 0
            or int(ids[-1]) >= self._num_embeddings[table]
            or not bool((ids[1:] > ids[:-1]).all())
        ):
            raise ValueError(f"table {table!r}: hot ids must be sorted, unique and in range")
        self._hot_merged[start:end] = ids + self._id_base[table]
        self._codes.pop(table, None)  # derived from the hot ids: rebuilt on next use

    def split_tables(self) -> list[str]:
        return list(self._hot_span)

    def _is_split(self, key: str) -> bool:
        return self._table_of_feature.get(key) in self._hot_span

    def _layout(self, kjt: KeyedJaggedTensor) -> _Layout:
        keys = kjt.keys()
        vbe = kjt.variable_stride_per_key()
        strides = kjt.stride_per_key()
        spkpr = kjt.stride_per_key_per_rank() if vbe else None
        device = kjt.values().device
        cache_key = (tuple(keys), tuple(strides), tuple(map(tuple, spkpr or ())), device)
        layout = self._layouts.get(cache_key)
        if layout is not None:
            self._layouts.move_to_end(cache_key)
            return layout

        out_keys, key_source, out_spkpr = [], [], []
        key_of_row, first_row, second_row, stream_rows = [], [], [], []
        n_rows, in_row, out_row = sum(strides), 0, 0
        for k, (key, stride) in enumerate(zip(keys, strides, strict=True)):
            rows_in = list(range(in_row, in_row + stride))
            first = list(range(out_row, out_row + stride))
            key_of_row += [k] * stride
            first_row += first
            if self._is_split(key):
                second = [r + stride for r in first]
                stream_rows += rows_in + [n_rows + r for r in rows_in]
                out_keys += [key + HOT_SUFFIX, key + COLD_SUFFIX]
                key_source += [k, k]
                out_row += 2 * stride
            else:
                second = first
                stream_rows += rows_in
                out_keys.append(key)
                key_source.append(k)
                out_row += stride
            second_row += second
            if spkpr is not None:
                out_spkpr += [spkpr[k]] * (len(out_keys) - len(out_spkpr))
            in_row += stride

        tables = [self._table_of_feature.get(key) for key in keys]
        i64 = torch.int64
        layout = _Layout(
            keys=out_keys,
            key_of_row=_host_tensor(key_of_row, i64, device),
            first_row=_host_tensor(first_row, i64, device),
            second_row=_host_tensor(second_row, i64, device),
            stream_rows=_host_tensor(stream_rows, i64, device),
            key_source=_host_tensor(key_source, i64, device),
            is_split=_host_tensor([self._is_split(k) for k in keys], torch.bool, device),
            id_base=_host_tensor([self._id_base.get(t, 0) for t in tables], i64, device),
            hot_start=_host_tensor([self._hot_span.get(t, (0, 0))[0] for t in tables], i64, device),
            is_mean=_host_tensor([k in self._mean_features for k in keys], torch.bool, device),
            num_embeddings=_host_tensor(
                [self._num_embeddings.get(t, -1) if t else -1 for t in tables], i64, device
            ),
            any_split=any(self._is_split(k) for k in keys),
            any_mean=any(k in self._mean_features for k in keys),
            spkpr=out_spkpr if spkpr is not None else None,
            row_bounds=[0, *itertools.accumulate(strides)],
            key_info=[
                (
                    t if self._is_split(k) else None,
                    self._num_embeddings.get(t, -1) if t else -1,
                    k in self._mean_features,
                )
                for k, t in zip(keys, tables, strict=True)
            ],
        )
        self._layouts[cache_key] = layout
        if len(self._layouts) > _LAYOUT_CACHE_SIZE:
            self._layouts.popitem(last=False)
        return layout

    def validate(self, kjt: KeyedJaggedTensor) -> None:
        """Raise ValueError naming the feature, table and value of the first id of a known
        feature that is < 0 or >= its table's num_embeddings. Syncs with the host once."""
        layout = self._layout(kjt)
        values = kjt.values()
        if values.numel() == 0:
            return
        if values.device.type == "cpu":  # per key: one (min, max) each, one sync for all
            bounds = [0, *itertools.accumulate(kjt.length_per_key())]
            known = [
                k
                for k, (_, n, _) in enumerate(layout.key_info)
                if n >= 0 and bounds[k + 1] > bounds[k]
            ]
            if known:
                ranges = torch.stack(
                    [torch.stack(torch.aminmax(values[bounds[k] : bounds[k + 1]])) for k in known]
                ).tolist()
                for k, (lo, hi) in zip(known, ranges, strict=True):
                    if lo < 0 or hi >= layout.key_info[k][1]:
                        self._raise_bad_id(kjt, k, values[bounds[k] : bounds[k + 1]])
            return
        row = torch.repeat_interleave(
            torch.arange(layout.key_of_row.numel(), device=values.device),
            kjt.lengths().long(),
            output_size=values.numel(),
        )
        key = layout.key_of_row.index_select(0, row)
        v = values.long()
        n = layout.num_embeddings.index_select(0, key)
        bad = (n >= 0) & ((v < 0) | (v >= n))
        if not bool(bad.any()):
            return
        k = int(key[int(torch.nonzero(bad)[0, 0])])
        start = int(kjt.lengths()[: layout.row_bounds[k]].long().sum())
        self._raise_bad_id(kjt, k, values[start:])

    def _raise_bad_id(self, kjt: KeyedJaggedTensor, k: int, v: torch.Tensor) -> None:
        """Raise for the first out-of-range id of `v` (ids of input key `k`, in order)."""
        feature = kjt.keys()[k]
        table = self._table_of_feature[feature]
        n = self._num_embeddings[table]
        bad = int(v[int(torch.nonzero((v < 0) | (v >= n))[0, 0])])
        raise ValueError(f"feature {feature!r} (table {table!r}): id {bad} outside [0, {n})")

    def _code_table(self, table: str) -> torch.Tensor:
        """(N,) int32 (int64 from 2^31 rows) CPU tensor: the position of each id of split
        `table` in (hot ids, cold ids), so `< H` means hot (then it is the slot) and the cold
        index is `code - H`. Built on first use."""
        code = self._codes.get(table)
        if code is None:
            n = self._num_embeddings[table]
            hot = self.hot_ids(table).cpu()
            order = torch.cat([hot, torch.nonzero(cold_mask(hot, n)).flatten()])
            dtype = torch.int32 if n < 2**31 else torch.int64
            code = torch.empty(n, dtype=dtype)
            code[order] = torch.arange(n, dtype=dtype)
            self._codes[table] = code
        return code

    def forward(self, kjt: KeyedJaggedTensor, validate: bool = False) -> KeyedJaggedTensor:
        """The split KJT (see module docstring); `kjt` itself when no key is split or MEAN.
        With `validate`, first `self.validate(kjt)`; without, ids must be valid: an out-of-range
        id may raise an IndexError or alias another table's row."""
        layout = self._layout(kjt)
        if validate:
            self.validate(kjt)
        if not (layout.any_split or layout.any_mean):
            return kjt
        if kjt.values().device.type == "cpu" and self._use_cpu_rank:
            return self._forward_per_key(kjt, layout)
        return self._forward_vectorised(kjt, layout)

    def _forward_per_key(self, kjt: KeyedJaggedTensor, layout: _Layout) -> KeyedJaggedTensor:
        """CPU remap, feature by feature (see module docstring). The output KJT comes with its
        per-key JaggedTensors (`to_dict()` needs no further split) and per-key lengths."""
        values, lengths, weights = kjt.values(), kjt.lengths(), kjt.weights_or_none()
        bounds = [0, *itertools.accumulate(kjt.length_per_key())]  # key k: values[b[k]:b[k+1]]
        at_most_one = lengths.numel() == 0 or int(lengths.max()) <= 1
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        for k, (table, _, mean) in enumerate(layout.key_info):
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
            num_hot = self._hot_span[table][1] - self._hot_span[table][0]
            code = self._code_table(table).index_select(0, v).to(values.dtype)
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
        jt_dict = {  # VBE: left to TorchRec's own split (per-key strides)
            key: JaggedTensor(values=v, lengths=n, weights=w)
            for key, (v, n, w) in zip(layout.keys, parts, strict=True)
        }
        values = torch.cat([v for v, _, _ in parts])
        lengths = torch.cat([n for _, n, _ in parts])
        return self._output(
            kjt, layout, values, lengths, out_weights, [v.numel() for v, _, _ in parts], jt_dict
        )

    def _forward_vectorised(self, kjt: KeyedJaggedTensor, layout: _Layout) -> KeyedJaggedTensor:
        """All features at once, no host sync (accelerators; see module docstring)."""
        values = kjt.values()
        lengths = kjt.lengths().long()
        weights = kjt.weights_or_none()
        device = values.device
        n_ids, n_rows = values.numel(), lengths.numel()
        ids = torch.arange(n_ids, device=device)
        row = torch.repeat_interleave(
            torch.arange(n_rows, device=device), lengths, output_size=n_ids
        )
        key = layout.key_of_row.index_select(0, row)

        if layout.any_mean:
            inv_len = (1.0 / lengths.float()).index_select(0, row)
            inv_len = torch.where(layout.is_mean.index_select(0, key), inv_len, 1.0)
            weights = inv_len if weights is None else weights * inv_len

        if not layout.any_split:
            out_values, out_weights, out_lengths = values, weights, kjt.lengths()
        else:
            v = values.long()
            split = layout.is_split.index_select(0, key)
            merged_ids = v + layout.id_base.index_select(0, key)
            hot_ids = self._hot_merged.to(device)  # stays on CPU when built on meta
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
            out_lengths = out_len.to(kjt.lengths().dtype)

        return self._output(kjt, layout, out_values, out_lengths, out_weights)

    @staticmethod
    def _output(
        kjt: KeyedJaggedTensor,
        layout: _Layout,
        values: torch.Tensor,
        lengths: torch.Tensor,
        weights: torch.Tensor | None,
        length_per_key: list[int] | None = None,
        jt_dict: dict[str, JaggedTensor] | None = None,
    ) -> KeyedJaggedTensor:
        """The output KJT; `length_per_key` and `jt_dict` (per-key JaggedTensors) when known."""
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
            jt_dict=None if layout.spkpr is not None else jt_dict,
            inverse_indices=inverse,
        )


def remap_kjt(
    kjt: KeyedJaggedTensor,
    hot_ids: Mapping[str, torch.Tensor],
    num_embeddings: Mapping[str, int],
) -> KeyedJaggedTensor:
    """One-off remap: `hot_ids[f]` (sorted int64, 0 < H < N) and `num_embeddings[f]` (N) per
    split feature `f`; other features pass through. For repeated use build a `KJTRemapper`."""
    remapper = KJTRemapper(
        table_of_feature={f: f for f in num_embeddings},
        num_embeddings=num_embeddings,
        hot_ids={f: hot_ids[f] for f in hot_ids},
    )
    return remapper(kjt)


def validate_ids(
    kjt: KeyedJaggedTensor,
    num_embeddings: Mapping[str, int],
    table_of_feature: Mapping[str, str] | None = None,
) -> None:
    """Raise ValueError (naming feature, table and value) if an id of a feature is < 0 or >= its
    table's row count. `num_embeddings`: table name -> N; `table_of_feature`: feature name ->
    table name (default: each key of `num_embeddings` is a feature with a table of its own).
    Features not in `table_of_feature` are not checked. Syncs with the host once."""
    table_of_feature = table_of_feature or {f: f for f in num_embeddings}
    KJTRemapper(table_of_feature, num_embeddings, {}).validate(kjt)
