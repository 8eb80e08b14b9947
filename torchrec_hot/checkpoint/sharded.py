"""Sharded, plan-independent checkpoints of DMP models with `torch.distributed.checkpoint`.

What is saved, per logical table `T` (N rows, D columns), whatever the plan:
  `model/<prefix>embedding_bags.<T>.weight`   (N, D), rank r writes rows [r*B, (r+1)*B)
  `optim/<same key>/<state kind>`             (N, k) row-wise state (k = 1, or one column per
                                              column shard), or (N, D) for per-element state
plus every other (dense) entry of `model.state_dict()` under `model/<key>`, and the rest of the
training state (`training_state`: dense optimizers, LR schedulers, per-rank RNG states, user
`Stateful`s, step, data position). Rows travel from the hot/cold (or stock) shards to these row
blocks with `rows.to_row_blocks` and back with `rows.from_row_blocks`; no rank ever holds a
whole table. DCP reshards the row blocks when the world size changes, so a checkpoint taken under
one plan, world size or stock TorchRec loads under another.

Checked: each rank records the CRC-32 of the files it wrote (`checksums`), and a load checks
them first, so a file damaged after the save is a `CheckpointError` naming it, not wrong weights.

Atomic: a save writes `<dir>/.step_<n>.tmp`, and only after every rank has written its part does
rank 0 fsync and rename it to `<dir>/step_<n>` and point `<dir>/LATEST` at it (`files.publish`).
A save that dies part-way leaves LATEST on the previous complete checkpoint; the next save removes
what it left (`files.leftovers`), a load reports it. The directory must be one file system seen by
all ranks (a shared mount across hosts).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed._shard.sharded_tensor import (
    ShardedTensor,
)
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.stateful import Stateful
from torch.optim.lr_scheduler import LRScheduler

from torchrec_hot.checkpoint import checksums, files
from torchrec_hot.checkpoint.training_state import (
    TrainingProgress,
    apply_training_entries,
    flatten_entries,
    rebuild_entries,
    training_entries,
)
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
    return flat, tables, kinds




def _scalar(value: int) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.int64)


def save_checkpoint(
    model: nn.Module, directory: str | Path, step: int, keep: int = 2, *,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    lr_schedulers: Mapping[str, LRScheduler] | None = None,
    extra: Mapping[str, Stateful] | None = None,
    data_position: int | None = None, rng: bool = True,
) -> Path:
    """Saves the training state as `<directory>/step_<step>` and then points
    `<directory>/LATEST` at it (fsynced, renamed into place: a crash at any point leaves LATEST
    naming a complete step). Collective.

    Saved: `model` (a DMP model, hot/cold or stock) with its fused embedding optimizer state;
    the dense `optimizers` (by name; a TorchRec `KeyedOptimizer` or any `torch.optim.Optimizer`
    over the model's parameters, never the fused one); `lr_schedulers` (by name); every rank's
    RNG states (`rng`); `extra`: any `Stateful` (`state_dict()` / `load_state_dict()`: a data
    loader, a metric, an EMA), per rank; `step` and `data_position` (default: `step`).

    Deletes all but the newest `keep` complete checkpoints (`keep=0` keeps them all) and what
    crashed saves left (`files.leftovers`). A rank that fails or dies during the save reaches
    the others as `CheckpointError` naming the step, this rank and the phase (with gloo at once;
    otherwise within the process group's timeout)."""
    root = Path(directory)
    final, tmp = root / f"step_{step:08d}", root / f".step_{step:08d}.tmp"
    rank, phase = dist.get_rank(), "removing leftovers"
    try:
        if rank == 0:
            root.mkdir(parents=True, exist_ok=True)
            files.remove(files.leftovers(root))
        dist.barrier()
        phase = "writing shards"
        flat, _, _ = _checkpoint_state(model, for_load=False)
        flat.update(flatten_entries(training_entries(
            model, rank, optimizers or {}, lr_schedulers or {}, extra or {}, rng,
            for_load=False)))
        flat["meta/step"] = _scalar(step)
        flat["meta/data_position"] = _scalar(step if data_position is None else data_position)
        flat["meta/world_size"] = _scalar(dist.get_world_size())
        dcp.save(flat, checkpoint_id=str(tmp))
        phase = "recording its files' checksums"
        checksums.record(tmp, rank)
        phase = "waiting for every rank's shards"
        dist.barrier()
        phase = "waiting for rank 0 to publish"
        if rank == 0:
            phase = "publishing"
            _move_into_place(root, tmp, final)
            files.publish(root, final.name)
            phase = "pruning, after the publish"
            files.prune(root, keep)
        dist.barrier()
    except (RuntimeError, OSError, CheckpointException) as e:  # a peer failed or died mid-save
        raise CheckpointError(
            f"rank {rank}: saving step {step} to {final} failed while {phase}, on this or "
            f"another rank ({e}); {root / 'LATEST'} names {files.published(root, strict=False)}"
        ) from e
    return final


def _move_into_place(root: Path, tmp: Path, final: Path) -> None:
    """Renames the written `tmp` to `final` (a re-save of the same step moves the old one to
    `files.replaced(final)` first, removed after), with the data and both renames fsynced."""
    files.fsync_dir(tmp)
    old = files.replaced(final)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    files.fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint `<directory>/LATEST` names, or None when there is none yet. (If a re-save
    of that step died between its two renames, the old copy under its `.old.tmp` name.)"""
    try:
        name = files.published(Path(directory))
    except ValueError as e:
        raise CheckpointError(str(e)) from e
    if name is None:
        return None
    path = Path(directory) / name
    if not (path / ".metadata").exists() and (files.replaced(path) / ".metadata").exists():
        path = files.replaced(path)
    if not (path / ".metadata").exists():
        raise CheckpointError(f"{Path(directory) / 'LATEST'} names {path}, which is not a "
                              "complete checkpoint")
    return path


def _has(keys: set[str], prefix: str) -> bool:
    """Whether the checkpoint holds the entry `prefix` (a tensor or a nested dict)."""
    return prefix in keys or any(k.startswith(prefix + "/") for k in keys)


def load_checkpoint(
    model: nn.Module, path: str | Path, *,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    lr_schedulers: Mapping[str, LRScheduler] | None = None,
    extra: Mapping[str, Stateful] | None = None, rng: bool = True,
) -> TrainingProgress:
    """Loads a checkpoint (a `step_<n>` directory, or a directory with LATEST) into `model`
    and the given objects (those `save_checkpoint` took; each must be in the checkpoint), whatever
    plan or world size saved the model; sets this rank's RNG states when `rng` and the checkpoint
    has them for this rank. `extra` gets this rank's saved state, or rank 0's when the
    checkpoint was written by fewer ranks. Returns the step, data position and saving world
    size. Leftovers of crashed saves are reported (logged), not removed. Collective."""
    path = Path(path)
    if (path / "LATEST").exists():
        stale = files.leftovers(path)
        if stale and dist.get_rank() == 0:
            logging.getLogger(__name__).warning(
                "%s holds leftovers of saves that died (the next save removes them): %s",
                path, ", ".join(p.name for p in stale))
        path = latest_checkpoint(path)  # type: ignore[assignment]
    if not (path / ".metadata").exists():
        raise CheckpointError(f"{path} is not a complete checkpoint (no .metadata)")
    rank = dist.get_rank()
    _check_files(path, rank)
    optimizers, lr_schedulers, extra = optimizers or {}, lr_schedulers or {}, extra or {}
    try:
        keys = set(dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata)
    except Exception as e:  # pickle's, EOF and zip errors of a cut or damaged .metadata
        raise CheckpointError(f"{path / '.metadata'} is not readable (corrupt or truncated?): "
                              f"{e!r}") from e
    needed = [f"dense_optim/{n}" for n in optimizers] + [f"lr_scheduler/{n}" for n in lr_schedulers]
    extra_rank = rank if all(_has(keys, f"extra/{n}/rank_{rank}") for n in extra) else 0
    needed += [f"extra/{n}/rank_{extra_rank}" for n in extra]
    missing = [n for n in needed if not _has(keys, n)]
    if missing:
        raise CheckpointError(f"{path} holds no {', '.join(missing)} (saved without them?)")
    flat, tables, kinds = _checkpoint_state(model, for_load=True)
    entries = training_entries(model, rank, optimizers, lr_schedulers, extra, rng,
                               for_load=True, extra_rank=extra_rank,
                               rng_present=_has(keys, f"rng/rank_{rank}"))
    rng_entry = entries.get(f"rng/rank_{rank}")
    if rng_entry is not None and f"rng/rank_{rank}/cuda" not in keys:
        rng_entry.pop("cuda", None)  # saved where CUDA was not in use
    flat.update(flatten_entries(entries))
    for name in ("step", "data_position", "world_size"):
        if f"meta/{name}" in keys:
            flat[f"meta/{name}"] = _scalar(-1)
    try:
        dcp.load(flat, checkpoint_id=str(path))
    except (Exception, CheckpointException) as e:  # DCP's CheckpointException is a BaseException
        raise CheckpointError(f"rank {rank}: cannot load checkpoint {path} (corrupt, truncated, "
                              f"made for other tables, or a peer died?): {e}") from e
    _scatter_model(model, flat, tables, kinds)
    restored = apply_training_entries(model, rebuild_entries(entries, flat), rank, optimizers,
                                      lr_schedulers, extra, extra_rank)
    step = int(flat["meta/step"])
    position = int(flat.get("meta/data_position", step))
    return TrainingProgress(step=step, data_position=position,
                            saved_world_size=int(flat.get("meta/world_size", -1)),
                            rng_restored=restored)


def _check_files(path: Path, rank: int) -> None:
    """Every rank checks its share of the checkpoint's files against the save's checksums
    (`checksums.problems`), then all compare notes: a damaged file is the same
    `CheckpointError`, naming it, on every rank (none is left waiting in DCP's load)."""
    world = dist.get_world_size()
    notes: list[list[str] | None] = [None] * world
    try:
        dist.all_gather_object(notes, checksums.problems(path, rank, world))
    except RuntimeError as e:
        raise CheckpointError(f"rank {rank}: checking checkpoint {path} failed: a peer died? "
                              f"({e})") from e
    found = [n for part in notes for n in part or []]
    if found:
        raise CheckpointError(f"checkpoint {path} is damaged: " + "; ".join(found))


def _scatter_model(model: nn.Module, flat: dict, tables: list, kinds: dict) -> None:
    """Puts the loaded row blocks and dense entries of `flat` into `model` and its fused
    optimizer."""
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
