"""How a logical table is split into a hot and a cold TorchRec table (names and configs).

A logical table `T` (N rows, features `f...`) with H hot rows, 0 < H < N, becomes two ordinary
tables `T__hot` (H rows, features `f__hot`) and `T__cold` (N - H rows, features `f__cold`). Row
`hot_ids[j]` of `T` is row `j` of `T__hot`; a cold row `v` is row `v - #(hot ids < v)` of
`T__cold`. A table with H == 0 or H == N is not split and keeps its own name and features.
"""

from __future__ import annotations

import enum

from torchrec import EmbeddingBagConfig

HOT_SUFFIX = "__hot"
COLD_SUFFIX = "__cold"
# Attribute under which the hot/cold module keeps its EmbeddingBagCollection of split tables;
# sharding plans name that module `<module path>.<SPLIT_MODULE_ATTR>`.
SPLIT_MODULE_ATTR = "split_ebc"


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


def split_module_path(module_path: str) -> str:
    """The path of the split EmbeddingBagCollection inside a model, as sharding plans key it."""
    return f"{module_path}.{SPLIT_MODULE_ATTR}" if module_path else SPLIT_MODULE_ATTR


def split_table_configs(config: EmbeddingBagConfig, hot_rows: int) -> list[EmbeddingBagConfig]:
    """The TorchRec tables that hold `config`'s rows when its `hot_rows` hottest are hot:
    `[config]` when the table stays whole, else `[T__hot, T__cold]`."""
    n = config.num_embeddings
    if not 0 <= hot_rows <= n:
        raise ValueError(f"table {config.name!r}: hot_rows {hot_rows} outside [0, {n}]")
    if placement_of(hot_rows, n) is not Placement.SPLIT:
        return [config]
    return [
        EmbeddingBagConfig(
            name=config.name + suffix,
            num_embeddings=rows,
            embedding_dim=config.embedding_dim,
            feature_names=[f + suffix for f in config.feature_names],
            pooling=config.pooling,
            data_type=config.data_type,
            weight_init_max=config.weight_init_max,
            weight_init_min=config.weight_init_min,
        )
        for suffix, rows in ((HOT_SUFFIX, hot_rows), (COLD_SUFFIX, n - hot_rows))
    ]
