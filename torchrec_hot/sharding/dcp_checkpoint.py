"""Sharded, plan-independent checkpoints of DMP models with `torch.distributed.checkpoint`.

What is saved, per logical table `T` (N rows, D columns), whatever the plan:
  `model/<prefix>embedding_bags.<T>.weight`   (N, D), rank r writes rows [r*B, (r+1)*B)
  `optim/<same key>/<state kind>`             (N, k) row-wise state (k = 1, or one column per
                                              column shard), or (N, D) for per-element state
plus every other (dense) entry of `model.state_dict()` under `model/<key>` and the training step
under `meta/step`. Rows travel from the hot/cold (or stock) shards to these row blocks with
`rows.to_row_blocks` and back with `rows.from_row_blocks`; no rank ever holds a whole table. DCP
reshards the row blocks when the world size changes, so a checkpoint taken under one plan, world
size or stock TorchRec loads under another.

Atomic: a save writes `<dir>/.step_<n>.tmp`, and only after every rank has written its part does
rank 0 rename it to `<dir>/step_<n>` and point `<dir>/LATEST` at it (write + os.replace). A save
that dies part-way leaves LATEST on the previous complete checkpoint. The directory must be one
file system seen by all ranks (a shared mount across hosts).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import (
    Shard,
    ShardedTensor,
    ShardMetadata,
    init_from_local_shards,
)
from torch.distributed.checkpoint.api import CheckpointException

from torchrec_hot.sharding.checkpoint import hot_cold_modules
from torchrec_hot.sharding.rows import Piece, block_range, cold_ids, from_row_blocks, to_row_blocks
from torchrec_hot.sharding.split import SPLIT_MODULE_ATTR


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt, or does not fit the model."""


@dataclass(frozen=True)
class _Part:
    key: str  # state-dict key of the inner table's weight
    table: str  # inner table name (optimizer state names start with it)
    ids: torch.Tensor  # logical row id of each of the inner table's rows


@dataclass(frozen=True)
class _Table:
    key: str  # logical weight key
    num_rows: int
    dim: int
    parts: tuple[_Part, ...]


def _tables(model: nn.Module, state: dict) -> list[_Table]:
    """Every embedding table of the model, logical, with where its rows are (same on all ranks)."""
    tables: list[_Table] = []
    covered: set[str] = set()
    for prefix, module in hot_cold_modules(model).items():
        for t in module.embedding_bag_configs():
            names = module.split_table_names(t.name)
            if len(names) == 1:
                ids = [torch.arange(t.num_embeddings)]
            else:
                hot = module.hot_ids(t.name).cpu()
                ids = [hot, cold_ids(hot, t.num_embeddings)]
            parts = tuple(
                _Part(f"{prefix}{SPLIT_MODULE_ATTR}.embedding_bags.{n}.weight", n, i)
                for n, i in zip(names, ids, strict=True)
            )
            covered.update(p.key for p in parts)
            key = f"{prefix}embedding_bags.{t.name}.weight"
            tables.append(_Table(key, t.num_embeddings, t.embedding_dim, parts))
    for key, value in state.items():  # stock tables: one part, rows in order
        if isinstance(value, ShardedTensor) and key not in covered and "embedding_bags." in key:
            n, d = value.size()
            name = key.split("embedding_bags.")[1].rsplit(".weight", 1)[0]
            tables.append(_Table(key, n, d, (_Part(key, name, torch.arange(n)),)))
    return sorted(tables, key=lambda t: t.key)


def _shard_index(shard: Shard) -> tuple[int, ...]:
    return tuple(shard.metadata.shard_offsets)


def _weight_pieces(table: _Table, state: dict) -> list[Piece]:
    pieces = []
    for part in table.parts:
        for shard in state[part.key].local_shards():
            r0, c0 = _shard_index(shard)
            rows = shard.tensor.shape[0]
            pieces.append(Piece(part.ids[r0 : r0 + rows], c0, shard.tensor.detach()))
    return pieces


def _state_pieces(table: _Table, kind: str, optim_state: dict) -> list[Piece]:
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
                (offset,) = _shard_index(shard)
                block, r0 = divmod(offset, rows_in_part)
                pieces.append(Piece(part.ids[r0 : r0 + t.numel()], block, t.view(-1, 1)))
            else:
                r0, c0 = _shard_index(shard)
                pieces.append(Piece(part.ids[r0 : r0 + t.shape[0]], c0, t))
    return pieces


def _optimizer_kinds(tables: list[_Table], optim_state: dict) -> dict[str, dict[str, tuple]]:
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


def _blocks_tensor(block: torch.Tensor, num_rows: int) -> ShardedTensor:
    rank, world = dist.get_rank(), dist.get_world_size()
    start, end = block_range(num_rows, world, rank)
    shards = []
    if end > start:
        meta = ShardMetadata([start, 0], [end - start, block.shape[1]], f"rank:{rank}/cpu")
        shards.append(Shard(block, meta))
    return init_from_local_shards(shards, num_rows, block.shape[1])


def _optim_state(model: nn.Module) -> dict:
    optimizer = getattr(model, "fused_optimizer", None)
    return optimizer.state_dict()["state"] if optimizer is not None else {}


def _checkpoint_state(model: nn.Module, for_load: bool) -> tuple[dict, list, dict]:
    """The flat DCP state of `model` (row blocks; zeros when `for_load`), its tables and
    optimizer kinds."""
    state = model.state_dict()
    tables = _tables(model, state)
    optim_state = _optim_state(model)
    kinds = _optimizer_kinds(tables, optim_state)
    world, rank = dist.get_world_size(), dist.get_rank()
    flat: dict = {}
    for table in tables:
        start, end = block_range(table.num_rows, world, rank)
        dtype = state[table.parts[0].key].dtype
        block = (torch.zeros(end - start, table.dim, dtype=dtype) if for_load else
                 to_row_blocks(_weight_pieces(table, state), table.num_rows, table.dim, dtype))
        flat[f"model/{table.key}"] = _blocks_tensor(block, table.num_rows)
        for kind, (width, kdtype) in sorted(kinds.get(table.key, {}).items()):
            block = (torch.zeros(end - start, width, dtype=kdtype) if for_load else
                     to_row_blocks(_state_pieces(table, kind, optim_state), table.num_rows,
                                   width, kdtype))
            flat[f"optim/{table.key}/{kind}"] = _blocks_tensor(block, table.num_rows)
    covered = {p.key for t in tables for p in t.parts}
    for key, value in state.items():
        if key not in covered and not isinstance(value, ShardedTensor):
            flat[f"model/{key}"] = value.detach().clone()
    flat["meta/step"] = torch.zeros((), dtype=torch.int64)
    return flat, tables, kinds


def save_checkpoint(model: nn.Module, directory: str | Path, step: int, keep: int = 2) -> Path:
    """Saves `model` (a DMP model, hot/cold or stock) and its fused optimizer state as
    `<directory>/step_<step>`; keeps the newest `keep` checkpoints. Collective."""
    root = Path(directory)
    final, tmp = root / f"step_{step:08d}", root / f".step_{step:08d}.tmp"
    if dist.get_rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    dist.barrier()
    flat, _, _ = _checkpoint_state(model, for_load=False)
    flat["meta/step"] = torch.tensor(step, dtype=torch.int64)
    dcp.save(flat, checkpoint_id=str(tmp))
    dist.barrier()
    if dist.get_rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        latest = root / "LATEST.tmp"
        latest.write_text(final.name)
        os.replace(latest, root / "LATEST")
        done = sorted(p for p in root.glob("step_*") if p.is_dir())
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint `<directory>/LATEST` names, or None when there is none yet."""
    pointer = Path(directory) / "LATEST"
    if not pointer.exists():
        return None
    path = Path(directory) / pointer.read_text().strip()
    if not (path / ".metadata").exists():
        raise CheckpointError(f"{pointer} names {path}, which is not a complete checkpoint")
    return path


def load_checkpoint(model: nn.Module, path: str | Path) -> int:
    """Loads a checkpoint (a `step_<n>` directory, or a directory with LATEST) into `model`,
    whatever plan or world size saved it; returns its step. Collective."""
    path = Path(path)
    if (path / "LATEST").exists():
        path = latest_checkpoint(path)  # type: ignore[assignment]
    if not (path / ".metadata").exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no .metadata)")
    flat, tables, kinds = _checkpoint_state(model, for_load=True)
    try:
        dcp.load(flat, checkpoint_id=str(path))
    except (Exception, CheckpointException) as e:  # DCP's CheckpointException is a BaseException
        raise CheckpointError(f"cannot load checkpoint {path} (corrupt, truncated or made "
                              f"for other tables?): {e}") from e
    state = model.state_dict()
    optim_state = _optim_state(model)
    for table in tables:
        _scatter(flat[f"model/{table.key}"], table, lambda p: state[p.key], False)
        for kind in sorted(kinds.get(table.key, {})):
            _scatter(flat[f"optim/{table.key}/{kind}"], table,
                     lambda p, k=kind: optim_state.get(p.key, {}).get(f"{p.table}.{k}"), True)
    covered = {p.key for t in tables for p in t.parts}
    for key, value in state.items():
        if key not in covered and not isinstance(value, ShardedTensor):
            state[key] = flat[f"model/{key}"]
    model.load_state_dict(state)
    if optim_state:
        current = model.fused_optimizer.state_dict()  # type: ignore[union-attr]
        current["state"] = optim_state
        model.fused_optimizer.load_state_dict(current)  # type: ignore[union-attr]
    return int(flat["meta/step"])


def _scatter(blocks: ShardedTensor, table: _Table, target_of, row_state: bool) -> None:  # type: ignore[no-untyped-def]
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
                (offset,) = _shard_index(shard)
                column, r0 = divmod(offset, part.ids.numel())
                wanted.append(part.ids[r0 : r0 + t.numel()])
                where.append((t, column, True))
            else:
                r0, c0 = _shard_index(shard)
                wanted.append(part.ids[r0 : r0 + t.shape[0]])
                where.append((t, c0, False))
    rows = from_row_blocks(block, table.num_rows, wanted)
    with torch.no_grad():
        for (t, col, one_column), r in zip(where, rows, strict=True):
            t.copy_(r[:, col] if one_column else r[:, col : col + t.shape[1]])
