"""State-dict hooks that give a hot/cold module the stock (logical) layout.

`state_dict()` merges each split table's part weights (`LogicalTable.part_keys`) into the
logical key (`LogicalTable.key`, (N, D)), and `load_state_dict()` splits it back, so
checkpoints move both ways between the hot/cold module and a stock `EmbeddingBagCollection`
(plain, unsharded tensors; sharded ones are left in the split layout for TorchRec).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from torchrec_hot.tables.rows import LogicalTable


class HasLogicalTables(Protocol):
    """A module whose tables are held as `LogicalTable`s (the hot/cold modules)."""

    def logical_tables(self) -> list[LogicalTable]: ...


def logical_state_dict_hook(
    module: HasLogicalTables, state_dict: dict, prefix: str, local_metadata: dict
) -> None:
    """state_dict post-hook: part weights -> logical weights."""
    for table in module.logical_tables():
        keys = table.part_keys(prefix)
        if not all(k in state_dict for k in keys):
            continue
        parts = [state_dict[k] for k in keys]
        if not all(type(p) in (torch.Tensor, nn.Parameter) for p in parts):
            continue  # sharded (ShardedTensor / DTensor): left in the split layout
        for k in keys:
            del state_dict[k]
        state_dict[table.key(prefix)] = table.merge(parts)


def split_state_dict_pre_hook(
    module: HasLogicalTables,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """load_state_dict pre-hook: logical weights -> part weights."""
    for table in module.logical_tables():
        key = table.key(prefix)
        if key not in state_dict:
            continue
        full = state_dict.pop(key)
        shape = (table.num_embeddings, table.embedding_dim)
        if table.is_split and tuple(full.shape) != shape:
            error_msgs.append(
                f"size mismatch for {key}: copying a param with shape {tuple(full.shape)}, "
                f"the logical table has {shape}"
            )
            continue
        for part_key, part in zip(table.part_keys(prefix), table.split(full), strict=True):
            state_dict[part_key] = part
