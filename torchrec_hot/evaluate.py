"""Drift: do the rows that were hot in the profiling window stay hot in a held-out window?

For each table and hot size k (the planner's, from a plan, or the greedy allocation of a share
of all tables' bytes, as HotPlanner does it), with H the k rows most looked up in the profile:
  predicted  share of the profile's lookups that H takes (what a plan from it believes);
  expected   share H should take in new input if popularity is stable: `predicted` corrected
             for selection (Good-Turing: a row seen c times is expected c* = (c+1) N[c+1]/N[c]
             times in as much new input; rows never seen share N[1] / N[0] each;
             `profiling.stats.expected_share`, the report's estimate too), since the top-k
             of a finite window over-state themselves;
  actual     share of the held-out window's lookups that H takes;
  oracle     the held-out window's own top-k share (the best any k rows could do).
A table drifts at k when `loss = 1 - actual / expected` is at least `DRIFT_LOSS` *and* the drop
`expected - actual` exceeds `DRIFT_Z` standard errors (binomial, both windows, with the
samples' design effect), so that neither noise nor an immaterial loss is flagged.

Why 10% and 3 standard errors: under stable popularity, `expected` is unbiased for `actual`
(the stable tables of the tests and benchmark stay within a few percent at every budget), and
3 SE keeps false alarms from noise below 0.2% per table and budget; a loss of 10% of the
predicted HBM hits is where re-planning pays: the lookups that fall back to UVM grow by
0.1 * predicted / (1 - predicted), i.e. by 90% or more for any table whose predicted share is
at least 0.9, which every table worth splitting has at the budgets planned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from torchrec_hot.profiling.profile import PopularityProfile, WindowSelector
from torchrec_hot.profiling.stats import expected_share
from torchrec_hot.tables.allocation import TableDemand, allocate_hot_rows
from torchrec_hot.tables.hottest import hottest_rows

DRIFT_LOSS = 0.10
DRIFT_Z = 3.0
DEFAULT_BUDGETS = (0.01, 0.05, 0.2)


@dataclass(frozen=True)
class DriftRow:
    """One table at one hot size. Shares are 0..1 of the table's lookups in that window."""

    table: str
    budget: str
    num_rows: int
    hot_rows: int
    predicted: float
    expected: float
    actual: float
    oracle: float
    se: float
    loss: float
    drifting: bool


def budget_hot_rows(
    profile: PopularityProfile, budgets: Sequence[float], window: WindowSelector = None
) -> dict[str, dict[str, int]]:
    """label -> table -> hot rows that HotPlanner's greedy allocation gives each table when
    HBM holds `budget` (a share) of all tables' weight bytes (fp32 rows)."""
    demands = [
        TableDemand.from_counts(t.name, profile.counts(t.name, window), 4 * t.embedding_dim)
        for t in profile.tables
    ]
    total = sum(t.num_embeddings * 4 * t.embedding_dim for t in profile.tables)
    return {f"{b:.0%}": allocate_hot_rows(demands, int(b * total)) for b in budgets}


def evaluate_drift(
    profile: PopularityProfile,
    holdout: PopularityProfile,
    hot_rows: Mapping[str, Mapping[str, int]],
    hot_ids: Mapping[str, np.ndarray] | None = None,
    window: WindowSelector = None,
    holdout_window: WindowSelector = None,
) -> list[DriftRow]:
    """Rows for every budget label and table of `hot_rows` (label -> table -> k); where
    `hot_ids[table]` is given (a plan's hot rows), it is used for the label "plan"."""
    rows = []
    for t in profile.tables:
        counts = profile.counts(t.name, window)
        held = holdout.counts(t.name, holdout_window)
        rate = min(profile.window_data(w).sample_rate for w in _names(profile, window))
        raw = np.rint(counts * rate).astype(np.int64) if rate < 1 else counts
        n_p, n_h = max(int(raw.sum()), 1), max(int(held.sum()), 1)
        deff_p = _design_effect(profile, t.name, window)
        deff_h = _design_effect(holdout, t.name, holdout_window)
        held_sorted = None
        for label, per_table in hot_rows.items():
            ids = (
                hot_ids[t.name]
                if label == "plan" and hot_ids is not None and t.name in hot_ids
                else hottest_rows(counts, int(per_table.get(t.name, 0)))
            )
            k = int(ids.shape[0])
            predicted = float(raw[ids].sum()) / n_p
            expected = expected_share(raw, ids) if k < t.num_embeddings else predicted
            actual = float(held[ids].sum()) / n_h
            if held_sorted is None:
                held_sorted = -np.sort(-held)
            oracle = float(held_sorted[:k].sum()) / n_h
            se = math.sqrt(
                deff_p * expected * (1 - expected) / n_p + deff_h * actual * (1 - actual) / n_h
            )
            loss = 1.0 - actual / expected if expected > 0 else 0.0
            drifting = k > 0 and loss >= DRIFT_LOSS and expected - actual > DRIFT_Z * se
            rows.append(
                DriftRow(
                    t.name,
                    label,
                    t.num_embeddings,
                    k,
                    predicted,
                    expected,
                    actual,
                    oracle,
                    se,
                    loss,
                    drifting,
                )
            )
    return rows


def _names(profile: PopularityProfile, window: WindowSelector) -> list[str]:
    if window is None:
        return profile.windows
    return [window] if isinstance(window, str) else list(window)


def _design_effect(profile: PopularityProfile, table: str, window: WindowSelector) -> float:
    ws = [profile.window_data(w) for w in _names(profile, window)]
    total = sum(w.counters[table].total for w in ws)
    return max(1.0, sum(w.sum_sq[table] for w in ws) / max(total, 1))


def drifting_tables(rows: Sequence[DriftRow]) -> list[str]:
    """Tables flagged at any hot size, in table order."""
    seen: dict[str, None] = {}
    for r in rows:
        if r.drifting:
            seen[r.table] = None
    return list(seen)


def format_drift(rows: Sequence[DriftRow]) -> str:
    """The evaluation as text: one block per hot-size label, then the drifting tables."""
    lines = []
    for label in dict.fromkeys(r.budget for r in rows):
        lines.append(f"hot size: {label}" + (" (the plan's)" if label == "plan" else " of bytes"))
        lines.append(
            f"  {'table':<14}{'rows':>11}{'hot rows':>10}{'predicted':>10}{'expected':>9}"
            f"{'actual':>8}{'oracle':>8}{'loss':>7}{'± se':>7}  drift"
        )
        for r in (r for r in rows if r.budget == label):
            lines.append(
                f"  {r.table:<14}{r.num_rows:>11,}{r.hot_rows:>10,}{r.predicted:>10.1%}"
                f"{r.expected:>9.1%}{r.actual:>8.1%}{r.oracle:>8.1%}{r.loss:>7.1%}"
                f"{r.se:>7.2%}  {'DRIFT' if r.drifting else ''}"
            )
    flagged = drifting_tables(rows)
    lines.append(
        f"drifting tables (loss >= {DRIFT_LOSS:.0%} of expected HBM hits and > {DRIFT_Z:g} SE): "
        + (", ".join(flagged) if flagged else "none")
    )
    return "\n".join(lines)
