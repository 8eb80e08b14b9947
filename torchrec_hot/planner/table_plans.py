"""Table plans from counts, and the HBM / UVM bytes a placed plan puts on every rank."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torchrec import EmbeddingBagConfig
from torchrec.distributed.types import ParameterSharding, ShardingPlan

from torchrec_hot.planner.constraints import is_uvm_part
from torchrec_hot.planner.hot_plan import TablePlan
from torchrec_hot.planner.plan_io import parameter_shardings, rank_bytes
from torchrec_hot.tables.hottest import hottest_rows
from torchrec_hot.tables.split import split_table_configs


def table_plan_from_counts(
    config: EmbeddingBagConfig, counts: np.ndarray, hot_rows: int, bytes_per_row: int
) -> TablePlan:
    """The plan of a table whose `hot_rows` hottest rows (`tables.hottest`) are hot."""
    if hot_rows >= config.num_embeddings:
        hot_ids = np.arange(config.num_embeddings, dtype=np.int64)
    else:
        hot_ids = hottest_rows(counts, hot_rows)
    return TablePlan(
        name=config.name,
        num_embeddings=config.num_embeddings,
        embedding_dim=config.embedding_dim,
        feature_names=tuple(config.feature_names),
        hot_ids=hot_ids,
        lookups=int(counts.sum()),
        hot_lookups=int(counts[hot_ids].sum()),
        row_bytes=bytes_per_row,
    )


def plan_rank_bytes(
    table_plans: Sequence[TablePlan], plan: ShardingPlan, world: int
) -> tuple[list[int], list[int]]:
    """(HBM, UVM) bytes per rank of the split tables: hot parts and whole-hot tables count as
    HBM, cold parts and whole-cold tables as UVM, whatever the device; a UVM part with a cache
    counts its cache slots (load factor x its rows) as HBM and the rest as UVM."""
    shapes: dict[str, tuple[int, int]] = {}
    per_row: dict[str, int] = {}
    in_hbm: dict[str, float] = {}  # share of the part's rows in HBM
    for tp in table_plans:
        config = EmbeddingBagConfig(
            name=tp.name,
            num_embeddings=tp.num_embeddings,
            embedding_dim=tp.embedding_dim,
            feature_names=list(tp.feature_names),
        )
        for part in split_table_configs(config, tp.hot_rows):
            shapes[part.name] = (part.num_embeddings, part.embedding_dim)
            per_row[part.name] = tp.row_bytes
            in_hbm[part.name] = (
                min(1.0, tp.cache_load_factor) if is_uvm_part(tp, part.name) else 1.0
            )

    def hbm_fraction(table: str, _: ParameterSharding) -> float:
        return in_hbm[table]

    return rank_bytes(
        parameter_shardings(plan), shapes, per_row, hbm_fraction, world
    )
