"""What-ifs of `bench_planner.py` on its own plans (modeled, no new simulation):

- `machinery_sensitivity`: the strategy choice and the modeled ms of ours, stock, tuned stock
  (TorchRec's embedding offloading) and all-HBM with FBGEMM's cache machinery at
  0, 0.5, 1, 2 and 4 times the default constants (`machinery.CacheMachinery`), on the traffic
  curves the plan's `StrategyEvaluation` already simulated;
- `replication`: per table, the best number of hottest rows to replicate on every rank
  (`strategy.replication`), at 8 ranks on 1 host, 8 ranks on 8 hosts and 64 ranks on 8 hosts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

SCALES = (0.0, 0.5, 1.0, 2.0, 4.0)
# (ranks, hosts) of the replication what-if
REPLICATION_SETUPS = ((8, 1), (8, 8), (64, 8))
KEYS = ("ours", "stock TorchRec", "stock TorchRec, embedding offloading", "all HBM (limit)")


def machinery_sensitivity(evaluation: Any, plan: Any, world: int) -> list[dict[str, Any]]:
    """Per scale: the chosen strategies (table counts) and the modeled ms of `KEYS`, from
    `evaluation` (the plan's `StrategyEvaluation`) re-costed; the budget is the plan's row
    budget x `world` (the planner's own total, unless it shrank it for an overflowing rank)."""
    from torchrec_hot.planner.strategy.cost_model import CostModel
    from torchrec_hot.planner.strategy.machinery import CacheMachinery

    base = evaluation.cost_model
    stock = plan.stock.sharding_plan if plan.stock is not None else None
    tuned = plan.tuned_stock.sharding_plan if plan.tuned_stock is not None else None
    out = []
    for scale in SCALES:
        model = CostModel(
            base.hardware, base.world_size, base.tables, base.batch_per_rank,
            local_world_size=base.local_world_size, dense_ms=base.dense_ms,
            uvm_efficiency=base.uvm_efficiency, machinery=CacheMachinery().scaled(scale),
        )  # fmt: skip
        ev = evaluation.with_cost_model(model)
        choice = ev.choose_best(plan.hbm_budget_bytes * world)
        summary = ev.summary(choice, stock, (), tuned)
        chosen = Counter(t.chosen.strategy.value for t in choice.tables.values())
        out.append({
            "scale": scale,
            "ms": {k: summary.model_ms.get(k, float("nan")) for k in KEYS},
            "chosen": dict(chosen),
        })  # fmt: skip
    return out


def replication(tables: list, profile: Any, holdout: Any, batch: int) -> list[dict[str, Any]]:
    """Per setup of `REPLICATION_SETUPS`: per table the best replication option (net ms) and
    the totals; hot shares: the profile's hottest rows on the hold-out's counts."""
    from torchrec.optim import RowWiseAdagrad

    from torchrec_hot.planner.strategy.cost_model import H100, CostModel, TableCostSpec
    from torchrec_hot.planner.strategy.replication import (
        best_replication,
        holdout_hot_shares,
        replication_options,
    )

    specs = {t.name: TableCostSpec.from_config(t, RowWiseAdagrad) for t in tables}
    grids = {}
    for t in tables:
        top = min(t.num_embeddings, 64 * batch)  # whole small tables (data-parallel) included
        grid = np.unique(np.geomspace(16, max(top, 16), 40).astype(int)).tolist()
        sizes = sorted(s for s in {0, top, *grid} if s <= t.num_embeddings)
        shares = holdout_hot_shares(profile.counts(t.name), holdout.counts(t.name), sizes)
        grids[t.name] = (sizes, shares)
    out = []
    for ranks, hosts in REPLICATION_SETUPS:
        model = CostModel(H100, ranks, specs, batch, local_world_size=ranks // hosts)
        per_table = []
        for t in tables:
            sizes, shares = grids[t.name]
            best = best_replication(replication_options(model, t.name, sizes, shares))
            per_table.append({
                "table": t.name, "rows": best.rows, "hot_share": best.hot_share,
                "a2a_ms": model.a2a_ms(t.name), "saved_ms": best.saved_a2a_ms,
                "allreduce_ms": best.allreduce_ms, "update_ms": best.update_ms,
                "net_ms": best.net_ms, "hbm_bytes_per_rank": best.hbm_bytes_per_rank,
            })  # fmt: skip
        out.append({
            "ranks": ranks, "hosts": hosts, "tables": per_table,
            "a2a_ms": sum(p["a2a_ms"] for p in per_table),
            "saved_ms": sum(p["saved_ms"] for p in per_table),
            "cost_ms": sum(p["allreduce_ms"] + p["update_ms"] for p in per_table),
            "net_ms": sum(p["net_ms"] for p in per_table),
            "replicated_tables": sum(p["rows"] > 0 for p in per_table),
            "hbm_bytes_per_rank": sum(p["hbm_bytes_per_rank"] for p in per_table),
        })  # fmt: skip
    return out
