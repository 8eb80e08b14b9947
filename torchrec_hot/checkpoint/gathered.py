"""Checkpoints in the logical table layout, for plain and DistributedModelParallel models.

`logical_state_dict(model)` returns every entry of `model.state_dict()` as a full tensor, with
each hot/cold table merged back into one `<prefix>embedding_bags.<T>.weight` of shape (N, D).
The same call on a stock TorchRec model gives the same keys, so a checkpoint moves between a stock
model and a hot/cold one, under any plan: `load_logical_state_dict(model, state)` accepts it.

The fused optimizer's state follows the same rule through `logical_optimizer_state(model)` /
`load_logical_optimizer_state(model, state)`: `{logical weight key: {state name: full tensor}}`,
state names as TorchRec spells them for the logical table (`<T>.momentum1` for row-wise Adagrad,
shape (N,)).

Under DMP these are collectives (every rank calls them): shards are assembled by a sum-reduce of
zero-filled full tensors, so every rank briefly holds each full table. Meant for models whose
tables fit one host's memory (tests, the demo, small models); sharded checkpoints of large models
are a later step.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.distributed.model_parallel import DistributedModelParallel

from torchrec_hot.sharding.apply import hot_cold_modules
from torchrec_hot.tables.rows import sibling_key, table_of_key


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _full(values: Mapping[str, torch.Tensor | ShardedTensor]) -> dict[str, torch.Tensor]:
    """Full tensors of every entry; ShardedTensors are assembled on every rank (collective).
    Keys present on only some ranks (optimizer state lives where shards live) are handled."""
    shapes = {
        k: (tuple(v.size()), v.dtype) for k, v in values.items() if isinstance(v, ShardedTensor)
    }
    if _distributed():
        gathered: list[dict] = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, shapes)
        for d in gathered:
            shapes.update(d)
    out = {k: v.detach().clone() for k, v in values.items() if not isinstance(v, ShardedTensor)}
    for key in sorted(shapes):
        shape, dtype = shapes[key]
        full = torch.zeros(shape, dtype=dtype)
        value = values.get(key)
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                index = tuple(
                    slice(o, o + s)
                    for o, s in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes,
                                    strict=True)
                )
                full[index] = shard.tensor.detach().to("cpu", dtype)
        if _distributed():
            dist.all_reduce(full)  # shards do not overlap: a sum puts each in place, exactly
        out[key] = full
    return out


def _merge_split_tables(
    state: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Replaces each hot/cold module's part entries (keyed by part weight key; weights or one
    kind of optimizer state) by logical ones (keyed by logical weight key)."""
    for prefix, module in hot_cold_modules(model).items():
        for table in module.logical_tables():
            keys = table.part_keys(prefix)
            if all(k in state for k in keys):
                state[table.key(prefix)] = table.merge([state.pop(k) for k in keys])
    return state


def _split_logical_tables(
    state: Mapping[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Inverse of `_merge_split_tables`; ValueError when a tensor's rows do not fit its table."""
    out = dict(state)
    for prefix, module in hot_cold_modules(model).items():
        for table in module.logical_tables():
            key = table.key(prefix)
            if key not in out:
                continue
            full = out.pop(key)
            rows = full.shape[0] if full.dim() > 1 else full.numel()
            if rows % table.num_embeddings or (full.dim() > 1 and rows != table.num_embeddings):
                raise ValueError(
                    f"{key}: checkpoint has {tuple(full.shape)}, the table has "
                    f"{table.num_embeddings} rows"
                )
            out.update(zip(table.part_keys(prefix), table.split(full), strict=True))
    return out


def logical_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole state as full CPU tensors, embedding tables in the logical layout."""
    return _merge_split_tables(_full(model.state_dict()), model)


def load_logical_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Loads a logical state dict (from `logical_state_dict` of a hot/cold or a stock model).
    Under DMP each rank takes its shards' rows from the full tensors."""
    model.load_state_dict(_split_logical_tables(state, model))


def _fused_optimizer(model: nn.Module):  # type: ignore[no-untyped-def]
    if not isinstance(model, DistributedModelParallel):
        raise TypeError("fused optimizer state needs a DistributedModelParallel model")
    return model.fused_optimizer


def logical_optimizer_state(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Fused optimizer state of a DMP model as full tensors, in the logical layout:
    {logical weight key: {"<T>.<state>": tensor}} (collective)."""
    state = _fused_optimizer(model).state_dict()["state"]
    flat = {f"{k}/{n}": v for k, entry in state.items() for n, v in entry.items()}
    full = _full(flat)
    # Re-key every entry by (inner table, state kind) so split halves merge like weights.
    tables: dict[str, torch.Tensor] = {}
    for name, tensor in full.items():
        key, state_name = name.split("/", 1)
        table, kind = state_name.split(".", 1)
        tables[f"{sibling_key(key, table)}/{kind}"] = tensor
    kinds = {k.split("/", 1)[1] for k in tables}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for kind in sorted(kinds):
        of_kind = {k.split("/")[0]: v for k, v in tables.items() if k.endswith("/" + kind)}
        for key, tensor in _merge_split_tables(of_kind, model).items():
            out.setdefault(key, {})[f"{table_of_key(key)[1]}.{kind}"] = tensor
    return out


def load_logical_optimizer_state(
    model: nn.Module, state: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Loads state from `logical_optimizer_state` (of this or another plan, or stock TorchRec):
    each rank copies its shards' rows of every state tensor from the full tensors."""
    optimizer = _fused_optimizer(model)
    current = optimizer.state_dict()
    by_kind: dict[str, dict[str, torch.Tensor]] = {}
    for key, entry in state.items():
        for name, tensor in entry.items():
            by_kind.setdefault(name.split(".", 1)[1], {})[key] = tensor
    for kind, tensors in by_kind.items():
        for inner_key, full in _split_logical_tables(tensors, model).items():
            table = table_of_key(inner_key)[1]
            target = current["state"].get(inner_key, {}).get(f"{table}.{kind}")
            if target is None:
                continue  # this rank holds no shard of that table
            for shard in target.local_shards():
                index = tuple(
                    slice(o, o + s)
                    for o, s in zip(shard.metadata.shard_offsets, shard.metadata.shard_sizes,
                                    strict=True)
                )
                shard.tensor.copy_(full[index])
    optimizer.load_state_dict(current)
