"""Summing hot and cold pooled outputs on their rank, before TorchRec's output all-to-all.

Under DistributedModelParallel a split feature `f` is two inner features, `f__hot` and
`f__cold`. Left alone, TorchRec's table-wise sharding pools each on the rank holding its table
and sends both (B, D) blocks through the output all-to-all, and the hot/cold module adds them
afterwards: twice the all-to-all bytes of stock TorchRec for that feature, plus a merge pass
over the whole output each way. When both halves of `f` are sharded table-wise on the same rank
(the planner co-locates them, `planner.colocate`), that rank can add them first:
`presum_sharded_ebc` patches a `ShardedEmbeddingBagCollection` so that

- each table-wise output dist first sums, on the local lookup output (B_global, local columns),
  every co-located pair into one block (`ColumnSum`: `hot + cold`, the same float sum the merge
  did, and in backward both halves get the block's gradient, as before), and then runs a
  TorchRec `TwPooledEmbeddingDist` built for the summed widths;
- the module's output names / widths list `f` (the logical name) for each summed pair,

so its output KeyedTensor already holds the logical block of `f`, the all-to-all moves what
stock TorchRec's moves for a table-wise `f`, and the hot/cold module's merge has nothing left
to do for it. Pairs sharded otherwise (row-wise, column-wise, on two ranks) are left to the
merge by name. A batch with a variable batch size per feature (VBE) takes TorchRec's own
per-feature all-to-all with the halves unsummed (`PresummedOutputDist` keeps the original dist,
and `Presum.select` gives the module the unsummed output names for that batch); the merge then
adds them by name.

The patch reads and replaces private attributes of TorchRec 1.8's sharded EBC and table-wise
sharding (`_output_dists`, `_embedding_names`, `_embedding_dims`, `_embedding_shardings`,
`_sharding_types`, `_emb_dim_per_rank_per_feature`, `_pg`): pinned in the Makefile, and the
2-rank exactness tests fail if a TorchRec upgrade moves them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn
from torchrec.distributed.embedding_sharding import EmbeddingShardingContext
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection
from torchrec.distributed.sharding.tw_sharding import TwPooledEmbeddingDist
from torchrec.distributed.types import Awaitable

from torchrec_hot.sharding.hot_cold_merge import ColumnSum

TABLE_WISE = "table_wise"


class PresummedOutputDist(nn.Module):
    """Sums this rank's co-located hot/cold output columns (`column_sum`; None when this rank
    has none) and redistributes the summed (B_global, summed columns) tensor with `summed`;
    a VBE batch goes through `original`, TorchRec's dist for the unsummed columns."""

    def __init__(self, column_sum: ColumnSum | None, summed: nn.Module, original: nn.Module):
        super().__init__()
        self.column_sum = column_sum
        self.summed = summed
        self.original = original

    def forward(
        self, local_embs: torch.Tensor, sharding_ctx: EmbeddingShardingContext | None = None
    ) -> Awaitable[torch.Tensor]:
        if sharding_ctx is not None and sharding_ctx.variable_batch_per_feature:
            return self.original(local_embs, sharding_ctx)
        if self.column_sum is not None:
            local_embs = self.column_sum(local_embs)
        return self.summed(local_embs, sharding_ctx)


@dataclasses.dataclass(frozen=True)
class Presum:
    """A patched module's two output layouts: `summed` (names, widths) for ordinary batches,
    `original` for VBE ones, the logical outputs summed on their rank, and the module's dists
    it patched."""

    summed_features: list[str]
    summed: tuple[list[str], list[int]]
    original: tuple[list[str], list[int]]
    output_dists: list  # the patched module's list of dists (a rebuilt module has another)

    def select(self, sharded: ShardedEmbeddingBagCollection, vbe: bool) -> None:
        """Gives `sharded` the output names and widths of the next batch's layout."""
        names, dims = self.original if vbe else self.summed
        if sharded._embedding_names is not names:
            sharded._embedding_names, sharded._embedding_dims = names, dims


def _summed_rank(
    names: Sequence[str], dims: Sequence[int], logical_of_pair: dict[tuple[str, str], str]
) -> tuple[list[str], list[int], list[list[int]]]:
    """One rank's local outputs `names` (widths `dims`) with each co-located (hot, cold) pair of
    `logical_of_pair` replaced by its logical name at the hot half's position: (names, widths,
    positions summed into each)."""
    where = {n: i for i, n in enumerate(names)}
    partner = {}
    for (hot, cold), logical in logical_of_pair.items():
        if hot in where and cold in where:
            partner[hot] = (cold, logical)
    skip = {cold for cold, _ in partner.values()}
    out_names, out_dims, parts = [], [], []
    for i, n in enumerate(names):
        if n in skip:
            continue
        if n in partner:
            cold, logical = partner[n]
            out_names.append(logical)
            parts.append([i, where[cold]])
        else:
            out_names.append(n)
            parts.append([i])
        out_dims.append(dims[i])
    return out_names, out_dims, parts


def presum_sharded_ebc(
    sharded: ShardedEmbeddingBagCollection, logical_of_pair: dict[tuple[str, str], str]
) -> Presum:
    """Patches `sharded` (in place) to sum every (hot, cold) output pair of `logical_of_pair`
    (inner output names -> logical name) that lies table-wise on one rank before its output
    all-to-all, and selects the summed layout. The summed features are the same on every
    rank. Idempotent: an already patched table-wise dist is left as it is."""
    rank = sharded._env.rank
    summed: list[str] = []
    names: list[str] = []
    dims: list[int] = []
    for i, (kind, sharding) in enumerate(
        zip(sharded._sharding_types, sharded._embedding_shardings, strict=True)
    ):
        dist = sharded._output_dists[i]
        if kind != TABLE_WISE:
            names += sharding.embedding_names()
            dims += sharding.embedding_dims()
            continue
        per_rank = [
            _summed_rank(n, d, logical_of_pair)
            for n, d in zip(
                sharding.embedding_names_per_rank(),
                sharding._emb_dim_per_rank_per_feature(),
                strict=True,
            )
        ]
        for rank_names, rank_dims, parts in per_rank:
            names += rank_names
            dims += rank_dims
            summed += [rank_names[j] for j, p in enumerate(parts) if len(p) == 2]
        if isinstance(dist, PresummedOutputDist) or all(
            len(p) == 1 for _, _, parts in per_rank for p in parts
        ):
            continue
        local_dims = sharding._emb_dim_per_rank_per_feature()[rank]
        parts = per_rank[rank][2]
        column_sum = ColumnSum(parts, local_dims) if any(len(p) == 2 for p in parts) else None
        reduced = TwPooledEmbeddingDist(
            pg=sharding._pg,
            dim_sum_per_rank=[sum(d) for _, d, _ in per_rank],
            emb_dim_per_rank_per_feature=[d for _, d, _ in per_rank],
            device=sharded._device,
            qcomm_codecs_registry=sharding.qcomm_codecs_registry,
        )
        sharded._output_dists[i] = PresummedOutputDist(column_sum, reduced, dist)
    original = (
        [n for s in sharded._embedding_shardings for n in s.embedding_names()],
        [d for s in sharded._embedding_shardings for d in s.embedding_dims()],
    )
    presum = Presum(summed, (names, dims), original, sharded._output_dists)
    presum.select(sharded, vbe=False)
    return presum
