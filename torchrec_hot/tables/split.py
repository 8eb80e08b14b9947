"""How a logical table is split into a hot and a cold TorchRec table (names and configs).

A logical table `T` (N rows, features `f...`) with H hot rows, 0 < H < N, becomes two ordinary
tables `T__hot` (H rows, features `f__hot`) and `T__cold` (N - H rows, features `f__cold`). Row
`hot_ids[j]` of `T` is row `j` of `T__hot`; a cold row `v` is row `v - #(hot ids < v)` of
`T__cold`. A table with H == 0 or H == N is not split and keeps its own name and features.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TypeVar

from torchrec.modules.embedding_configs import BaseEmbeddingConfig

Config = TypeVar("Config", bound=BaseEmbeddingConfig)

HOT_SUFFIX = "__hot"
COLD_SUFFIX = "__cold"
# Attribute under which a hot/cold module keeps its stock collection of split tables (an
# EmbeddingBagCollection, or an EmbeddingCollection for sequence features); sharding plans name
# that module `<module path>.<attribute>`.
SPLIT_MODULE_ATTR = "split_ebc"
SPLIT_EC_ATTR = "split_ec"


class Placement(str, enum.Enum):
    """Where a logical table's rows live."""

    SPLIT = "split"  # hot rows in HBM, cold rows in UVM
    HBM = "hbm"  # the whole table in HBM
    UVM = "uvm"  # the whole table in UVM


def placement_of(hot_rows: int, num_embeddings: int) -> Placement:
    if hot_rows <= 0:
        return Placement.UVM
    if hot_rows >= num_embeddings:
        return Placement.HBM
    return Placement.SPLIT


def part_names(table: str, split: bool) -> list[str]:
    """Names of the TorchRec tables holding logical `table`: [T__hot, T__cold] when split,
    else [T]."""
    return [table + HOT_SUFFIX, table + COLD_SUFFIX] if split else [table]


def split_module_path(module_path: str, pooled: bool = True) -> str:
    """The path of the split collection inside a model, as sharding plans key it (`pooled`:
    an EmbeddingBagCollection's, else an EmbeddingCollection's)."""
    attr = SPLIT_MODULE_ATTR if pooled else SPLIT_EC_ATTR
    return f"{module_path}.{attr}" if module_path else attr


def split_table_configs(config: Config, hot_rows: int) -> list[Config]:
    """The TorchRec tables that hold `config`'s rows when its `hot_rows` hottest are hot:
    `[config]` when the table stays whole, else `[T__hot, T__cold]` (copies of `config`, an
    EmbeddingBagConfig or EmbeddingConfig, with their rows and suffixed names and features)."""
    n = config.num_embeddings
    if not 0 <= hot_rows <= n:
        raise ValueError(f"table {config.name!r}: hot_rows {hot_rows} outside [0, {n}]")
    if placement_of(hot_rows, n) is not Placement.SPLIT:
        return [config]
    return [
        dataclasses.replace(
            config,
            name=config.name + suffix,
            num_embeddings=rows,
            feature_names=[f + suffix for f in config.feature_names],
        )
        for suffix, rows in ((HOT_SUFFIX, hot_rows), (COLD_SUFFIX, n - hot_rows))
    ]
