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
(keys, strides) layout (copied through pinned memory, without blocking; `remap_layout.py`,
`remap_vectorised.py`).
CPU (default): feature by feature, since a feature's ids are one contiguous slice of the values:
host syncs cost nothing there, slices of a few thousand ids stay in cache, and no full-length
temporary is allocated (glibc serves each fresh buffer over ~128 KiB with new, page-faulting
pages: the vectorised path measured 20 ms for 26 x 4096 ids, this one 4-5 ms). Each split table
gets a code table (int32, 4 bytes per row, host memory, built on first CPU use): `code[v]` is
v's position in (hot ids, cold ids), so one gather and `code < H` split a feature (searchsorted's
CPU kernel costs ~200 ns per id), then `masked_select_jagged_1d` (or, when every bag holds one
id, as in Criteo, two masked selects). The output KJT carries its per-key lengths
(`remap_cpu.py`). Inputs of at most `cpu_batched_max_ids` ids skip the per-feature loop: one
numpy pass over all ids through the code tables concatenated (`remap_batched_cpu.py`; numpy's
~1 us calls instead of ~10 torch ops per feature). All paths give the same KJT.

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

The same split of a table's rows, optimizer state and state-dict keys is `tables.rows`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_hot.data.chunk import IdOutOfRangeError
from torchrec_hot.sharding.remap.batched_cpu import first_bad_key, remap_batched
from torchrec_hot.sharding.remap.cpu import remap_per_key
from torchrec_hot.sharding.remap.layout import RemapLayout, build_layout
from torchrec_hot.sharding.remap.vectorised import remap_vectorised, rows_and_keys
from torchrec_hot.tables.rows import cold_mask

__all__ = ["KJTRemapper", "remap_kjt", "validate_ids"]

_LAYOUT_CACHE_SIZE = 16


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
        cpu_batched_max_ids: on CPU, inputs of at most this many ids are remapped in one numpy
            pass over all features (`remap_batched_cpu.py`), larger ones feature by feature
            (measured crossover on a 2-core Xeon: ~32k ids). Same results.

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
        cpu_batched_max_ids: int = 1 << 15,
    ) -> None:
        super().__init__()
        self._use_cpu_rank = cpu_rank_table
        self._cpu_batched_max_ids = cpu_batched_max_ids
        self._codes: torch.Tensor | None = None  # CPU code tables, table t at `_id_base[t]`
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
        self._layouts: OrderedDict[tuple, RemapLayout] = OrderedDict()

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
        if self._codes is not None:  # derived from the hot ids: rewritten in place
            self._fill_code(table)

    def is_hot(self, table: str, ids: torch.Tensor) -> torch.Tensor:
        """bool mask over `ids` (valid ids of split table `table`): which are hot. On CPU one
        gather from the code table the CPU remap reads (built on first use), elsewhere a
        binary search of the hot ids."""
        start, end = self._hot_span[table]
        if ids.device.type == "cpu" and self._use_cpu_rank:
            return self._code_table(table)[ids] < end - start
        hot = self.hot_ids(table)
        slot = torch.searchsorted(hot, ids).clamp_(max=max(hot.numel() - 1, 0))
        return hot[slot] == ids

    def split_tables(self) -> list[str]:
        """Names of the split tables, in the order of the merged hot-id buffer."""
        return list(self._hot_span)

    def _layout(self, kjt: KeyedJaggedTensor) -> RemapLayout:
        """The (cached) layout of `kjt`'s keys and strides on its device."""
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

        layout = build_layout(
            keys,
            strides,
            spkpr,
            device,
            self._table_of_feature,
            self._num_embeddings,
            self._id_base,
            self._hot_span,
            self._mean_features,
        )
        self._layouts[cache_key] = layout
        if len(self._layouts) > _LAYOUT_CACHE_SIZE:
            self._layouts.popitem(last=False)
        return layout

    def validate(self, kjt: KeyedJaggedTensor) -> None:
        """Raise ValueError naming the feature, table and value of the first id of a known
        feature that is < 0 or >= its table's num_embeddings. Syncs with the host once."""
        self._validate(kjt, self._layout(kjt))

    def _validate(
        self, kjt: KeyedJaggedTensor, layout: RemapLayout
    ) -> tuple[torch.Tensor, ...] | None:
        """Raises for the first out-of-range id (see `validate`). On accelerators returns the
        ids' `rows_and_keys`, which the vectorised remap reuses; None on CPU."""
        values = kjt.values()
        if values.device.type == "cpu":  # per key: one (min, max) each
            if values.numel():
                per_key = np.asarray(kjt.length_per_key(), dtype=np.int64)
                k = first_bad_key(values.numpy(), per_key, layout.num_embeddings.numpy())
                if k is not None:
                    start = int(per_key[:k].sum())
                    self._raise_bad_id(kjt, k, values[start : start + int(per_key[k])])
            return None
        row, key = rows_and_keys(kjt, layout)
        v = values.long()
        n = layout.num_embeddings.index_select(0, key)
        bad = (n >= 0) & ((v < 0) | (v >= n))
        if bool(bad.any()):
            k = int(key[int(torch.nonzero(bad)[0, 0])])
            start = int(kjt.lengths()[: layout.row_bounds[k]].long().sum())
            self._raise_bad_id(kjt, k, values[start:])
        return row, key

    def _raise_bad_id(self, kjt: KeyedJaggedTensor, k: int, v: torch.Tensor) -> None:
        """Raise for the first out-of-range id of `v` (ids of input key `k`, in order)."""
        feature = kjt.keys()[k]
        table = self._table_of_feature[feature]
        n = self._num_embeddings[table]
        bad = int(v[int(torch.nonzero((v < 0) | (v >= n))[0, 0])])
        raise IdOutOfRangeError(feature, table, n, bad)

    def _code_tables(self) -> torch.Tensor:
        """The CPU code tables of all split tables in one buffer, table t's (N_t,) slice at
        `_id_base[t]` (the merged id space): `code[v]` is v's position in (hot ids, cold ids),
        so `< H` means hot (then it is the slot) and the cold index is `code - H`. int32 unless
        a split table has 2^31 rows or more; 4 bytes per split row, built on first CPU use."""
        if self._codes is None:
            sizes = [self._num_embeddings[t] for t in self._hot_span]
            dtype = torch.int64 if any(n >= 2**31 for n in sizes) else torch.int32
            self._codes = torch.empty(sum(sizes), dtype=dtype)
            for table in self._hot_span:
                self._fill_code(table)
        return self._codes

    def _code_table(self, table: str) -> torch.Tensor:
        """Split `table`'s (N,) code table, a view into `_code_tables()`."""
        base = self._id_base[table]
        return self._code_tables()[base : base + self._num_embeddings[table]]

    def _fill_code(self, table: str) -> None:
        """Writes split `table`'s code table from its current hot ids."""
        code, n = self._code_table(table), self._num_embeddings[table]
        hot = self.hot_ids(table).cpu()
        order = torch.cat([hot, torch.nonzero(cold_mask(hot, n)).flatten()])
        code[order] = torch.arange(n, dtype=code.dtype)

    def forward(self, kjt: KeyedJaggedTensor, validate: bool = False) -> KeyedJaggedTensor:
        """The split KJT (see module docstring); `kjt` itself when no key is split or MEAN.
        With `validate`, first `self.validate(kjt)`; without, ids must be valid: an out-of-range
        id may raise an IndexError or alias another table's row."""
        layout = self._layout(kjt)
        row_key = self._validate(kjt, layout) if validate else None
        if not (layout.any_split or layout.any_mean):
            return kjt
        values, weights = kjt.values(), kjt.weights_or_none()
        if (
            values.device.type == "cpu"
            and self._use_cpu_rank
            and values.numel() <= self._cpu_batched_max_ids
            and layout.spkpr is None
            and (weights is None or not weights.requires_grad)
        ):
            return remap_batched(kjt, layout, self._code_tables().numpy())
        if values.device.type == "cpu" and self._use_cpu_rank:
            return remap_per_key(kjt, layout, self._code_table)
        return remap_vectorised(kjt, layout, self._hot_merged, row_key)


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
