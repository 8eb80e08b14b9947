"""Modeled only: what replicating each table's hottest rows on every rank would save and cost.

HugeCTR's hybrid embedding (and EMBark, RecSys 2024) keep the most frequent rows of a table on
every rank: their lookups are served locally, so those bags leave the pooled-output
all-to-all, and their gradients are summed by an all-reduce instead. torchrec-hot does not
implement this; this module prices it with `cost_model.CostModel`'s terms, per table.

For one table with `R` replicated rows (its hottest by the profile), per step per rank:
  * saved all-to-all  `a2a_ms x s^p`: `a2a_ms` the table's pooled-output all-to-all (forward +
    backward, `CostModel.a2a_ms`), `s` the share of held-out lookups that hit the `R` rows
    and `p` the pooling factor (ids per bag): a bag skips the all-to-all only when all its
    ids are replicated (independent ids: `s^p`; the bench workloads have p = 1);
  * all-reduce        `CostModel.allreduce_ms(R x D x o)`: the dense gradient of the `R`
    rows (`D x o` bytes each, o = gradient element bytes), ring all-reduce every step;
  * update            `2 R (W + S) / hbm`: every rank applies the reduced gradient to its
    copy of all `R` rows (read + write of weights and optimizer state);
  * HBM               `R (W + S)` bytes on every rank (a sharded table holds `R / n` there).
Net saving = saved - all-reduce - update. Left out: the input (id) all-to-all, which shrinks
too (a saving not counted); overlap of the all-reduce with backward compute (a cost counted in
full); a sparse all-reduce of only the rows touched in the step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from torchrec_hot.planner.strategy.cost_model import CostModel
from torchrec_hot.tables.hottest import hotness_ranks

_MS_PER_S = 1000.0


@dataclass(frozen=True)
class ReplicationOption:
    """One table with its `rows` hottest rows on every rank (ms per step per rank).

    Attributes:
        table: table name.
        rows: replicated rows R.
        hot_share: share of held-out lookups that hit them (s).
        saved_a2a_ms: all-to-all time removed.
        allreduce_ms: gradient all-reduce time added.
        update_ms: HBM time of every rank's update of the R rows.
        hbm_bytes_per_rank: HBM the copies take on every rank.
    """

    table: str
    rows: int
    hot_share: float
    saved_a2a_ms: float
    allreduce_ms: float
    update_ms: float
    hbm_bytes_per_rank: int

    @property
    def net_ms(self) -> float:
        """Saved all-to-all minus the all-reduce and update it costs (> 0: it pays)."""
        return self.saved_a2a_ms - self.allreduce_ms - self.update_ms


def holdout_hot_shares(
    profile_counts: np.ndarray, holdout_counts: np.ndarray, sizes: Sequence[int]
) -> np.ndarray:
    """Share of `holdout_counts`' lookups (int (N,)) that hit the profile's `R` hottest rows
    (`hotness_ranks` of `profile_counts`, (N,)), for each R in `sizes` (float64)."""
    seen = np.flatnonzero(holdout_counts)
    total = float(holdout_counts[seen].sum())
    if total == 0:
        return np.zeros(len(sizes))
    ranks = hotness_ranks(profile_counts, seen)
    order = np.argsort(ranks, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(holdout_counts[seen][order], dtype=np.float64)])
    within = np.searchsorted(ranks[order], np.asarray(sizes, dtype=np.int64), side="left")
    return cum[within] / total


def replication_options(
    cost_model: CostModel,
    table: str,
    sizes: Sequence[int],
    hot_shares: Sequence[float],
    pooling: float = 1.0,
) -> list[ReplicationOption]:
    """The modeled option of replicating each of `sizes` hottest rows of `table` (module
    docstring); `hot_shares[i]`: the held-out share they serve; `pooling`: ids per bag."""
    if len(sizes) != len(hot_shares):
        raise ValueError("sizes and hot_shares must have the same length")
    if pooling < 1:
        raise ValueError(f"pooling must be >= 1 id per bag, got {pooling}")
    spec = cost_model.spec(table)
    a2a = cost_model.a2a_ms(table)
    hbm = cost_model.hardware.hbm_bw / _MS_PER_S  # bytes per ms, one rank
    out = []
    for rows, share in zip(sizes, hot_shares, strict=True):
        if rows < 0 or not 0.0 <= share <= 1.0:
            raise ValueError(f"bad replication size {rows} or hot share {share}")
        out.append(ReplicationOption(
            table=table,
            rows=int(rows),
            hot_share=float(share),
            saved_a2a_ms=a2a * float(share) ** pooling,
            allreduce_ms=cost_model.allreduce_ms(rows * spec.dim * spec.output_bytes),
            update_ms=2.0 * rows * spec.row_bytes / hbm,
            hbm_bytes_per_rank=int(rows * spec.row_bytes),
        ))  # fmt: skip
    return out


def best_replication(options: Sequence[ReplicationOption]) -> ReplicationOption:
    """The option with the largest net saving (the fewest rows among ties; include R = 0 so
    that 'replicate nothing' can win)."""
    if not options:
        raise ValueError("no replication options")
    return min(options, key=lambda o: (-o.net_ms, o.rows))
