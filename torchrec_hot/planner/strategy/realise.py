"""A chosen strategy option of one table -> the `TablePlan` that realises it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torchrec import EmbeddingBagConfig

from torchrec_hot.planner.hot_plan import TablePlan
from torchrec_hot.planner.strategy.types import Strategy, TableTraffic


def realised_table_plan(
    config: EmbeddingBagConfig,
    traffic: TableTraffic,
    plain_plan: Callable[[EmbeddingBagConfig, int], TablePlan],
) -> TablePlan:
    """The `TablePlan` that realises one chosen option: its hot rows, its cache (rows, kind,
    prefetch) and its strategy label (`evaluation.py`'s module docstring, step 3)."""
    rows = config.num_embeddings
    s = traffic.strategy
    if s is Strategy.ALL_HBM:
        hot, cache = rows, 0
    elif s is Strategy.ALL_UVM:
        hot, cache = 0, 0
    elif s is Strategy.STATIC:
        hot, cache = min(rows, traffic.hbm_rows), 0
    elif s is Strategy.STATIC_LOOK_FORWARD:
        hot = min(rows, traffic.hot_rows)
        cache = traffic.hbm_rows - hot
    else:
        hot, cache = 0, traffic.hbm_rows
    if cache > 0 and cache >= rows - hot:  # a cache as large as the UVM rows: all in HBM
        hot, cache = rows, 0
    base = plain_plan(config, hot)
    if cache <= 0:  # what the table became: a plain split, or a whole table
        label = {0: Strategy.ALL_UVM, rows: Strategy.ALL_HBM}.get(hot, Strategy.STATIC)
        if s is Strategy.STATIC:  # a static choice of 0 or all rows stays "static"
            label = s
        return _with(base, strategy=label.value)
    return _with(
        base,
        strategy=s.value,
        cache_rows=int(cache),
        cache_algorithm=s.cache_algorithm,
        prefetch=s.prefetched,
    )


def _with(tp: TablePlan, **changes: object) -> TablePlan:
    return dataclasses.replace(tp, **changes)  # type: ignore[arg-type]
