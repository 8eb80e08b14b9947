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

from collections.abc import Callable, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.distributed.model_parallel import DistributedModelParallel

from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection
from torchrec_hot.sharding.remap import merge_rows, split_rows
from torchrec_hot.sharding.split import SPLIT_MODULE_ATTR


def _root(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedModelParallel) else model


def hot_cold_modules(model: nn.Module) -> dict[str, HotColdEmbeddingBagCollection]:
    """State-dict prefix (e.g. "sparse_arch.embedding_bag_collection.") -> hot/cold module."""
    root = _root(model)
    if isinstance(root, HotColdEmbeddingBagCollection):
        return {"": root}
    return {
        f"{name}.": m
        for name, m in root.named_modules()
        if isinstance(m, HotColdEmbeddingBagCollection)
    }


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


def _merge_row_state(hot: torch.Tensor, cold: torch.Tensor, hot_ids: torch.Tensor) -> torch.Tensor:
    """Optimizer state of a split table -> logical. State shaped like the weights (rows, D)
    merges as rows; 1-D row-wise state is TorchRec's (rows * k,): one block of rows per column
    shard (k = 1 unless column-wise), merged block by block."""
    if hot.dim() > 1:
        return merge_rows(hot, cold, hot_ids)
    h = hot_ids.numel()
    k = hot.numel() // h
    c = cold.numel() // k
    if hot.numel() != h * k or cold.numel() != c * k:
        raise ValueError(
            f"row-wise optimizer state of {hot.numel()} hot and {cold.numel()} cold entries "
            f"does not split into {k} column shards: hot and cold halves are sharded differently"
        )
    return merge_rows(hot.reshape(k, h).T, cold.reshape(k, c).T, hot_ids).T.reshape(-1)


def _split_row_state(
    full: torch.Tensor, hot_ids: torch.Tensor, num_embeddings: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of `_merge_row_state`."""
    if full.dim() > 1:
        return split_rows(full, hot_ids)
    k = full.numel() // num_embeddings
    hot, cold = split_rows(full.reshape(k, num_embeddings).T, hot_ids)
    return hot.T.reshape(-1), cold.T.reshape(-1)


def _merge_split_tables(
    state: dict[str, torch.Tensor],
    model: nn.Module,
    key_of: Callable[[str, str], str],
    merge: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = merge_rows,
) -> dict[str, torch.Tensor]:
    """Replaces each hot/cold module's split entries by logical ones. `key_of(prefix, table)`
    names an entry (weights or one optimizer state) of inner table `table`."""
    for prefix, module in hot_cold_modules(model).items():
        for t in module.embedding_bag_configs():
            parts = module.split_table_names(t.name)
            keys = [key_of(f"{prefix}{SPLIT_MODULE_ATTR}.", p) for p in parts]
            if not all(k in state for k in keys):
                continue
            tensors = [state.pop(k) for k in keys]
            merged = (
                tensors[0]
                if len(tensors) == 1
                else merge(tensors[0], tensors[1], module.hot_ids(t.name).cpu())
            )
            state[key_of(prefix, t.name)] = merged
    return state


def _split_logical_tables(
    state: Mapping[str, torch.Tensor],
    model: nn.Module,
    key_of: Callable[[str, str], str],
    row_state: bool = False,
) -> dict[str, torch.Tensor]:
    out = dict(state)
    for prefix, module in hot_cold_modules(model).items():
        for t in module.embedding_bag_configs():
            key = key_of(prefix, t.name)
            if key not in out:
                continue
            full = out.pop(key)
            parts = module.split_table_names(t.name)
            rows = full.shape[0] if full.dim() > 1 or not row_state else full.numel()
            if rows % t.num_embeddings or (full.dim() > 1 and rows != t.num_embeddings):
                raise ValueError(
                    f"{key}: checkpoint has {tuple(full.shape)}, the table has "
                    f"{t.num_embeddings} rows"
                )
            if len(parts) == 1:
                halves = [full]
            elif row_state:
                halves = list(_split_row_state(full, module.hot_ids(t.name).cpu(),
                                               t.num_embeddings))
            else:
                halves = list(split_rows(full, module.hot_ids(t.name).cpu()))
            for part, half in zip(parts, halves, strict=True):
                out[key_of(f"{prefix}{SPLIT_MODULE_ATTR}.", part)] = half
    return out


def _weight_key(prefix: str, table: str) -> str:
    return f"{prefix}embedding_bags.{table}.weight"


def logical_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's whole state as full CPU tensors, embedding tables in the logical layout."""
    return _merge_split_tables(_full(model.state_dict()), model, _weight_key)


def load_logical_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Loads a logical state dict (from `logical_state_dict` of a hot/cold or a stock model).
    Under DMP each rank takes its shards' rows from the full tensors."""
    model.load_state_dict(_split_logical_tables(state, model, _weight_key))


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
        weight_key, state_name = name.split("/", 1)
        table, kind = state_name.split(".", 1)
        prefix = weight_key[: weight_key.index("embedding_bags.")]
        tables[f"{prefix}embedding_bags.{table}.weight/{kind}"] = tensor
    kinds = {k.split("/", 1)[1] for k in tables}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for kind in sorted(kinds):
        of_kind = {k.split("/")[0]: v for k, v in tables.items() if k.endswith("/" + kind)}
        merged = _merge_split_tables(of_kind, model, _weight_key, _merge_row_state)
        for weight_key, tensor in merged.items():
            table = weight_key.split("embedding_bags.")[1].rsplit(".weight", 1)[0]
            out.setdefault(weight_key, {})[f"{table}.{kind}"] = tensor
    return out


def load_logical_optimizer_state(
    model: nn.Module, state: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Loads state from `logical_optimizer_state` (of this or another plan, or stock TorchRec):
    each rank copies its shards' rows of every state tensor from the full tensors."""
    optimizer = _fused_optimizer(model)
    current = optimizer.state_dict()
    by_kind: dict[str, dict[str, torch.Tensor]] = {}
    for weight_key, entry in state.items():
        for name, tensor in entry.items():
            by_kind.setdefault(name.split(".", 1)[1], {})[weight_key] = tensor
    for kind, tensors in by_kind.items():
        split = _split_logical_tables(tensors, model, _weight_key, row_state=True)
        for inner_key, full in split.items():
            table = inner_key.split("embedding_bags.")[1].rsplit(".weight", 1)[0]
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
