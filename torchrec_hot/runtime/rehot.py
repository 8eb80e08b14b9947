"""Same plan, fresher hot rows: for re-planning a running job without re-sharding it.

`rehot_plan(plan, profile)` keeps every table's placement, hot row count and the TorchRec
sharding plan, and picks each split table's hot rows anew as the most accessed rows of
`profile` (e.g. counted online over the last N steps). `torchrec_hot.runtime.migrate.replan`
then moves rows of a running DMP model to match.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
from torchrec import EmbeddingBagConfig

from torchrec_hot.planner.hot_plan import HotPlan
from torchrec_hot.planner.table_plans import table_plan_from_counts
from torchrec_hot.profiling.profile import PopularityProfile


def rehot_plan(plan: HotPlan, recent: PopularityProfile | Mapping[str, np.ndarray]) -> HotPlan:
    """`plan` with every split table's hot ids replaced by the top rows of `recent` (a profile,
    or per-table counts such as `OnlineCounter.reduce()` gives; tables it lacks keep theirs)."""
    if isinstance(recent, PopularityProfile):
        recent.check_matches(plan.logical_configs(), check_dims=False)
        recent = {t.name: recent.counts(t.name) for t in plan.tables}
    tables = []
    for tp in plan.tables:
        if tp.placement.value != "split" or tp.name not in recent:
            tables.append(tp)
            continue
        config = EmbeddingBagConfig(name=tp.name, num_embeddings=tp.num_embeddings,
                                    embedding_dim=tp.embedding_dim,
                                    feature_names=list(tp.feature_names))
        counts = np.asarray(recent[tp.name], dtype=np.int64)
        if counts.shape != (tp.num_embeddings,):
            raise ValueError(f"table {tp.name!r}: {counts.shape[0]} counts for "
                             f"{tp.num_embeddings} rows")
        fresh = table_plan_from_counts(config, counts, tp.hot_rows, tp.row_bytes)
        tables.append(  # same module, sizes, strategy and cache; new rows
            dataclasses.replace(
                tp, hot_ids=fresh.hot_ids, lookups=fresh.lookups, hot_lookups=fresh.hot_lookups
            )
        )
    return dataclasses.replace(plan, tables=tuple(tables), stock=None)
