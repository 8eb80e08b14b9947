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
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import (
    ShardedTensor,
)
from torch.distributed.checkpoint.api import CheckpointException

from torchrec_hot.sharding.rows.blocks import block_range, to_row_blocks
from torchrec_hot.sharding.rows.layout import (
    blocks_tensor,
    optim_state_of,
    optimizer_kinds,
    scatter_rows,
    state_pieces,
    tables_of,
    weight_pieces,
)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt, or does not fit the model."""


def _checkpoint_state(model: nn.Module, for_load: bool) -> tuple[dict, list, dict]:
    """The flat DCP state of `model` (row blocks; zeros when `for_load`), its tables and
    optimizer kinds."""
    state = model.state_dict()
    tables = tables_of(model, state)
    optim_state = optim_state_of(model)
    kinds = optimizer_kinds(tables, optim_state)
    world, rank = dist.get_world_size(), dist.get_rank()
    flat: dict = {}
    for table in tables:
        start, end = block_range(table.num_rows, world, rank)
        dtype = state[table.parts[0].key].dtype
        block = (torch.zeros(end - start, table.dim, dtype=dtype) if for_load else
                 to_row_blocks(weight_pieces(table, state), table.num_rows, table.dim, dtype))
        flat[f"model/{table.key}"] = blocks_tensor(block, table.num_rows)
        for kind, (width, kdtype) in sorted(kinds.get(table.key, {}).items()):
            block = (torch.zeros(end - start, width, dtype=kdtype) if for_load else
                     to_row_blocks(state_pieces(table, kind, optim_state), table.num_rows,
                                   width, kdtype))
            flat[f"optim/{table.key}/{kind}"] = blocks_tensor(block, table.num_rows)
    covered = {p.key for t in tables for p in t.parts}
    for key, value in state.items():
        if key not in covered and not isinstance(value, ShardedTensor):
            flat[f"model/{key}"] = value.detach().clone()
    flat["meta/step"] = torch.zeros((), dtype=torch.int64)
    return flat, tables, kinds


def save_checkpoint(model: nn.Module, directory: str | Path, step: int, keep: int = 2) -> Path:
    """Saves `model` (a DMP model, hot/cold or stock) and its fused optimizer state as
    `<directory>/step_<step>` and then points `<directory>/LATEST` at it (written, fsynced and
    renamed into place: a crash at any point leaves LATEST naming a complete step). Deletes
    all but the newest `keep` complete checkpoints (`keep=0` keeps them all) and whatever an
    earlier crashed save left (`.step_*.tmp`, `LATEST.tmp`). Collective; a rank that fails or dies
    during the save reaches the others as `CheckpointError`."""
    root = Path(directory)
    final, tmp = root / f"step_{step:08d}", root / f".step_{step:08d}.tmp"
    try:
        if dist.get_rank() == 0:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".step_*.tmp"):  # saves that died before publishing
                shutil.rmtree(stale, ignore_errors=True)
            (root / "LATEST.tmp").unlink(missing_ok=True)
        dist.barrier()
        flat, _, _ = _checkpoint_state(model, for_load=False)
        flat["meta/step"] = torch.tensor(step, dtype=torch.int64)
        dcp.save(flat, checkpoint_id=str(tmp))
        dist.barrier()
        if dist.get_rank() == 0:
            shutil.rmtree(final, ignore_errors=True)
            os.rename(tmp, final)
            _publish(root, final.name)
            done = sorted(p for p in root.glob("step_*") if p.is_dir())
            for old in done[:-keep] if keep > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
        dist.barrier()
    except (RuntimeError, CheckpointException) as e:  # a peer failed or died mid-save
        raise CheckpointError(
            f"saving {final} failed on this or another rank ({e}); {root / 'LATEST'} still "
            "names the last complete checkpoint"
        ) from e
    return final


def _publish(root: Path, name: str) -> None:
    """Points `root/LATEST` at `name`: written to LATEST.tmp, fsynced, renamed into place, and
    the directory fsynced, so a crash or power loss leaves the old or the new pointer."""
    latest = root / "LATEST.tmp"
    with open(latest, "w") as f:
        f.write(name)
        f.flush()
        os.fsync(f.fileno())
    os.replace(latest, root / "LATEST")
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    optim_state = optim_state_of(model)
    for table in tables:
        scatter_rows(flat[f"model/{table.key}"], table, lambda p: state[p.key], False)
        for kind in sorted(kinds.get(table.key, {})):
            scatter_rows(flat[f"optim/{table.key}/{kind}"], table,
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


