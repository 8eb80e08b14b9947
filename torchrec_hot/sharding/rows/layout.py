"""Where each logical row of a DMP model's embedding tables lives, as data for moving rows.

A logical table `T` (N rows, D columns) is held by one or two inner tables ("parts"): a stock
table (rows 0..N-1 in order), or `T__hot` (row j = logical row hot_ids[j]) and `T__cold` (row c =
the c-th logical row that is not hot), each sharded by TorchRec into rectangles on ranks.
`tables_of` lists the tables and parts; `weight_pieces` / `state_pieces` are this rank's
rectangles of weights / fused-optimizer state as logical rows (for `rows.to_row_blocks`);
`scatter_rows` fills this rank's rectangles back from row blocks (`rows.from_row_blocks`).
Optimizer state: 1-D row-wise state (rows * k,) is seen as k columns, one per column shard;
2-D state is laid out like the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import (
    Shard,
    ShardedTensor,
    ShardMetadata,
    init_from_local_shards,
)

from torchrec_hot.sharding.apply import hot_cold_modules
from torchrec_hot.sharding.rows.blocks import Piece, block_range, from_row_blocks
from torchrec_hot.tables.rows import is_weight_key, table_of_key


@dataclass(frozen=True)
class Part:
    key: str  # state-dict key of the inner table's weight
    table: str  # inner table name (optimizer state names start with it)
    ids: torch.Tensor  # logical row id of each of the inner table's rows


@dataclass(frozen=True)
class Table:
    key: str  # logical weight key
    num_rows: int
    dim: int
    parts: tuple[Part, ...]


def tables_of(model: nn.Module, state: dict) -> list[Table]:
    """Every embedding table of the model, logical, with where its rows are (same on all ranks)."""
    tables: list[Table] = []
    covered: set[str] = set()
    for prefix, module in hot_cold_modules(model).items():
        for table in module.logical_tables():
            parts = tuple(
                Part(key, name, ids)
                for key, name, ids in zip(
                    table.part_keys(prefix), table.parts(), table.part_ids(), strict=True
                )
            )
            covered.update(p.key for p in parts)
            tables.append(
                Table(table.key(prefix), table.num_embeddings, table.embedding_dim, parts)
            )
    for key, value in state.items():  # stock tables: one part, rows in order
        if isinstance(value, ShardedTensor) and key not in covered and is_weight_key(key):
            n, d = value.size()
            name = table_of_key(key)[1]
            tables.append(Table(key, n, d, (Part(key, name, torch.arange(n)),)))
    return sorted(tables, key=lambda t: t.key)


def shard_index(shard: Shard) -> tuple[int, ...]:
    return tuple(shard.metadata.shard_offsets)


def weight_pieces(table: Table, state: dict) -> list[Piece]:
    pieces = []
    for part in table.parts:
        for shard in state[part.key].local_shards():
            r0, c0 = shard_index(shard)
            rows = shard.tensor.shape[0]
            pieces.append(Piece(part.ids[r0 : r0 + rows], c0, shard.tensor.detach()))
    return pieces


def state_pieces(table: Table, kind: str, optim_state: dict) -> list[Piece]:
    """Pieces of one optimizer state of a table: 1-D row-wise state (rows * k,) becomes
    columns 0..k-1 (one per column shard); 2-D state is laid out like the weights."""
    pieces = []
    for part in table.parts:
        st = optim_state.get(part.key, {}).get(f"{part.table}.{kind}")
        if st is None:
            continue
        rows_in_part = part.ids.numel()
        for shard in st.local_shards():
            t = shard.tensor.detach()
            if t.dim() == 1:
                (offset,) = shard_index(shard)
                block, r0 = divmod(offset, rows_in_part)
                pieces.append(Piece(part.ids[r0 : r0 + t.numel()], block, t.view(-1, 1)))
            else:
                r0, c0 = shard_index(shard)
                pieces.append(Piece(part.ids[r0 : r0 + t.shape[0]], c0, t))
    return pieces


def optimizer_kinds(tables: list[Table], optim_state: dict) -> dict[str, dict[str, tuple]]:
    """{logical key: {kind: (width, dtype)}}, agreed over all ranks (state lives where shards
    live)."""
    local: dict[str, dict[str, tuple]] = {}
    for table in tables:
        for part in table.parts:
            for name, st in optim_state.get(part.key, {}).items():
                kind = name.split(".", 1)[1]
                size = tuple(st.size())
                width = size[0] // part.ids.numel() if len(size) == 1 else size[1]
                local.setdefault(table.key, {})[kind] = (width, st.dtype)
    gathered: list[dict] = [{} for _ in range(dist.get_world_size())]
    dist.all_gather_object(gathered, local)
    out: dict[str, dict[str, tuple]] = {}
    for d in gathered:
        for key, kinds in d.items():
            out.setdefault(key, {}).update(kinds)
    return out


def blocks_tensor(block: torch.Tensor, num_rows: int) -> ShardedTensor:
    rank, world = dist.get_rank(), dist.get_world_size()
    start, end = block_range(num_rows, world, rank)
    shards = []
    if end > start:
        meta = ShardMetadata([start, 0], [end - start, block.shape[1]], f"rank:{rank}/cpu")
        shards.append(Shard(block, meta))
    return init_from_local_shards(shards, num_rows, block.shape[1])


def optim_state_of(model: nn.Module) -> dict:
    optimizer = getattr(model, "fused_optimizer", None)
    return optimizer.state_dict()["state"] if optimizer is not None else {}


def scatter_rows(blocks: ShardedTensor, table: Table, target_of, row_state: bool) -> None:  # type: ignore[no-untyped-def]
    """Copies this rank's shards of every part of `table` from the row blocks (collective)."""
    local = blocks.local_shards()
    width = blocks.size()[1]
    block = local[0].tensor if local else torch.empty(0, width)
    wanted, where = [], []
    for part in table.parts:
        target = target_of(part)
        for shard in target.local_shards() if target is not None else []:
            t = shard.tensor
            if row_state and t.dim() == 1:
                (offset,) = shard_index(shard)
                column, r0 = divmod(offset, part.ids.numel())
                wanted.append(part.ids[r0 : r0 + t.numel()])
                where.append((t, column, True))
            else:
                r0, c0 = shard_index(shard)
                wanted.append(part.ids[r0 : r0 + t.shape[0]])
                where.append((t, c0, False))
    rows = from_row_blocks(block, table.num_rows, wanted)
    with torch.no_grad():
        for (t, col, one_column), r in zip(where, rows, strict=True):
            t.copy_(r[:, col] if one_column else r[:, col : col + t.shape[1]])
