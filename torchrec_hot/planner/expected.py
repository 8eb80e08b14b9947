"""Out-of-sample HBM shares: what a plan's rows are expected to serve on input it was not made from.

The rows a plan makes hot are chosen for their profiled counts, so their share of the profile's
own lookups over-states what they serve on new input (the winner's curse: most rows seen once
were lucky). `HeldOutShares` gives, per table and set of rows, the share of the table's lookups
those rows are expected to take in new input:
  * from a hold-out profile when there is one: the share of the hold-out's lookups they take;
  * else the profile's Good-Turing estimate (`profiling.stats.expected_share`).
`with_expected` records it in each `TablePlan` (`expected_hot_lookups`), `stock_expected` in
the stock comparison (a stock cache of `clf x rows` slots counted as its `clf x rows` hottest
rows, an ideal cache); the strategy section measures caches on held-out batches instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from torchrec_hot.planner.hot_plan import StockComparison, TablePlan
from torchrec_hot.planner.plan_io import parameter_shardings
from torchrec_hot.planner.stock import hbm_fraction
from torchrec_hot.profiling.profile import PopularityProfile
from torchrec_hot.profiling.stats import expected_share
from torchrec_hot.tables.hottest import hottest_rows

GOOD_TURING = "Good-Turing estimate from the profile"
HOLDOUT = "share of the hold-out's lookups"


class HeldOutShares:
    """Expected held-out shares of rows of the profiled tables (module docstring).

    Args:
        counts: table name -> profiled lookups per row (int64, (num_embeddings,)).
        profile: the planned profile (its sample rate corrects Good-Turing's counts).
        holdout: a profile of held-out input (None: Good-Turing from `profile`).
    """

    def __init__(
        self,
        counts: Mapping[str, np.ndarray],
        profile: PopularityProfile,
        holdout: PopularityProfile | None = None,
    ) -> None:
        self.counts = counts
        self.holdout = holdout
        self.sample_rate = min(profile.window_data(w).sample_rate for w in profile.windows)
        self.source = HOLDOUT if holdout is not None else GOOD_TURING
        self._held: dict[str, np.ndarray] = {}
        self._hottest: dict[tuple[str, int], float] = {}

    def share(self, table: str, ids: np.ndarray) -> float:
        """Expected share (0..1) of `table`'s lookups in new input served by rows `ids`."""
        counts = self.counts[table]
        if ids.shape[0] >= counts.shape[0]:
            return 1.0
        if self.holdout is None:
            return expected_share(counts, ids, self.sample_rate)
        if table not in self._held:
            self._held[table] = self.holdout.counts(table)
        held = self._held[table]
        total = float(held.sum())
        return float(held[ids].sum()) / total if total else 0.0

    def hottest_share(self, table: str, k: int) -> float:
        """`share` of the table's `k` hottest rows (`tables.hottest`)."""
        key = (table, int(k))
        if key not in self._hottest:
            self._hottest[key] = self.share(table, hottest_rows(self.counts[table], k))
        return self._hottest[key]

    def with_expected(self, plans: Sequence[TablePlan]) -> list[TablePlan]:
        """`plans` with `expected_hot_lookups` set (on the scale of each table's `lookups`)."""
        return [
            dataclasses.replace(
                tp, expected_hot_lookups=self.share(tp.name, tp.hot_ids) * tp.lookups
            )
            if tp.name in self.counts
            else tp
            for tp in plans
        ]

    def stock_expected(self, stock: StockComparison | None, device: str) -> StockComparison | None:
        """`stock` with `hbm_lookups` the expected held-out lookups from HBM per table."""
        if stock is None or stock.sharding_plan is None:
            return stock
        module_plan = parameter_shardings(stock.sharding_plan)
        lookups = {}
        for name, counts in self.counts.items():
            if name not in module_plan:
                continue
            k = round(hbm_fraction(module_plan[name], device) * counts.shape[0])
            lookups[name] = self.hottest_share(name, k) * float(counts.sum())
        return dataclasses.replace(stock, hbm_lookups={**stock.hbm_lookups, **lookups})
