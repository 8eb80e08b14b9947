"""State-dict hooks that give a HotColdEmbeddingBagCollection the stock (logical) layout.

`state_dict()` merges each split table's `split_ebc.embedding_bags.<T__hot|T__cold>.weight`
into the logical `embedding_bags.<T>.weight` (N, D), and `load_state_dict()` splits it back, so
checkpoints move both ways between the hot/cold module and a stock `EmbeddingBagCollection`
(plain, unsharded tensors; sharded ones are left in the split layout for TorchRec).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from torchrec_hot.sharding.row_split import merge_rows, split_rows
from torchrec_hot.sharding.split import SPLIT_MODULE_ATTR

if TYPE_CHECKING:
    from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection


def logical_state_dict_hook(
    module: HotColdEmbeddingBagCollection, state_dict: dict, prefix: str, local_metadata: dict
) -> None:
    """state_dict post-hook: split-table weights -> logical `embedding_bags.<T>.weight`."""
    inner = f"{prefix}{SPLIT_MODULE_ATTR}.embedding_bags."
    for table in module.embedding_bag_configs():
        keys = [f"{inner}{part}.weight" for part in module.split_table_names(table.name)]
        if not all(k in state_dict for k in keys):
            continue
        parts = [state_dict[k] for k in keys]
        if not all(type(p) in (torch.Tensor, nn.Parameter) for p in parts):
            continue  # sharded (ShardedTensor / DTensor): left in the split layout
        for k in keys:
            del state_dict[k]
        merged = parts[0] if len(parts) == 1 else merge_rows(*parts, module.hot_ids(table.name))
        state_dict[f"{prefix}embedding_bags.{table.name}.weight"] = merged


def split_state_dict_pre_hook(
    module: HotColdEmbeddingBagCollection,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """load_state_dict pre-hook: logical `embedding_bags.<T>.weight` -> split-table weights."""
    inner = f"{prefix}{SPLIT_MODULE_ATTR}.embedding_bags."
    for table in module.embedding_bag_configs():
        key = f"{prefix}embedding_bags.{table.name}.weight"
        if key not in state_dict:
            continue
        parts = module.split_table_names(table.name)
        full = state_dict.pop(key)
        if len(parts) == 1:
            state_dict[f"{inner}{parts[0]}.weight"] = full
        elif tuple(full.shape) != (table.num_embeddings, table.embedding_dim):
            error_msgs.append(
                f"size mismatch for {key}: copying a param with shape {tuple(full.shape)}, "
                f"the logical table has ({table.num_embeddings}, {table.embedding_dim})"
            )
        else:
            hot, cold = split_rows(full, module.hot_ids(table.name))
            state_dict[f"{inner}{parts[0]}.weight"] = hot
            state_dict[f"{inner}{parts[1]}.weight"] = cold
