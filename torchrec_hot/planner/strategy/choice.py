"""Per table, the strategy and HBM size that minimise the whole model's modeled step time.

Each table offers discrete options: one `TableTraffic` per (strategy, HBM size), costing
`hbm_rows x row_bytes` HBM bytes (all ranks). We pick one option per table, total bytes within
the budget, minimising the whole model's modeled embedding time per step (`cost_model`).

Coupling through the overlap. With, per table, `h` its HBM ms, `l` its critical link ms and
`b` its look-forward background ms, and `C = all-to-all + dense ms` (fixed), the model's
embedding time is `sum(h + l) + max(0, sum b - (sum h + C))`, which is exactly

    T(x) = max(F(x), G(x) - C),  F = sum over tables of (h + l),  G = sum of (l + b).

`T` is the larger of two *separable* sums: the HBM-bound regime (every fetch hidden) and the
link-bound regime (the link is busy all step). For any `lam` in [0, 1],
`T >= lam F + (1 - lam)(G - C)`, which is separable with per-option weight `l + lam h +
(1 - lam) b`. So, for each `lam` on a grid:
  1. greedy: every table starts at its fewest-bytes option; segments of each table's lower
     convex hull of (bytes, weight) are taken in order of weight saved per byte while they
     fit (a table whose next segment does not fit takes no more segments);
  2. the LP relaxation of the same problem (the first segment that does not fit taken
     fractionally) gives `lower_bound(lam)`, a valid lower bound on the optimum of `T`;
  3. coordinate descent on the true `T`: any single table's switch to any option that fits
     and lowers `T` is taken, until none does.
The best over the grid then takes the same descent over switches of two tables at once
(`O(tables^2 x options^2)` per pass) and is returned, evaluated exactly (never a
surrogate), with the best lower bound, so `Choice.embedding_ms - Choice.lower_bound_ms`
bounds the distance to the optimum. `exact.choose_strategies_exact` is the reference: an exact
Pareto enumeration over (bytes, F, G) of partial choices (exponential; tests, small models).
Both run once per subset of cache kinds, for the per-batch cache machinery (`per_cache_kinds`).

Bytes: `hbm_rows x row_bytes` with `row_bytes` = weights + optimizer state per row. A cache's
slots hold weights only (FBGEMM never caches optimizer state) and carry ~16 B of per-slot
metadata; this charge ignores both, as the HBM budget is fixed per row here.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from torchrec_hot.planner.strategy.cost_model import CostBreakdown, CostModel, TableCost
from torchrec_hot.planner.strategy.types import Strategy, TableTraffic

_EPS = 1e-12


@dataclass(frozen=True)
class Option:
    """One table's strategy at one HBM size; `cost` is its per-rank ms before overlap."""

    traffic: TableTraffic
    hbm_bytes: int
    cost: TableCost

    @property
    def strategy(self) -> Strategy:
        return self.traffic.strategy

    @property
    def hbm_rows(self) -> int:
        return self.traffic.hbm_rows

    @property
    def f(self) -> float:
        """HBM-bound regime weight `h + l` (ms)."""
        return self.cost.hbm_ms + self.cost.link_ms

    @property
    def g(self) -> float:
        """Link-bound regime weight `l + b` (ms)."""
        return self.cost.link_ms + self.cost.background_ms


@dataclass(frozen=True)
class TableChoice:
    """The chosen option of one table and the runner-up.

    `chosen_ms` / `runner_up_ms`: the table's share of the embedding ms per step per rank (its
    HBM + link ms + its share of exposed fetches) in the chosen plan / with the runner-up
    swapped in; `runner_up_model_ms`: the whole model's embedding ms with the runner-up.
    The runner-up is the best option of another strategy using at most the chosen bytes
    (`runner_up_fits`), else the best option of another strategy at any size.
    """

    table: str
    chosen: Option
    chosen_ms: float
    runner_up: Option | None
    runner_up_ms: float | None
    runner_up_model_ms: float | None
    runner_up_fits: bool


@dataclass(frozen=True)
class Choice:
    """One option per table, the whole model's breakdown and the optimality bound."""

    tables: dict[str, TableChoice]
    breakdown: CostBreakdown
    budget_bytes: int
    hbm_bytes: int
    lower_bound_ms: float

    @property
    def embedding_ms(self) -> float:
        """Headline: modeled embedding ms per step per rank (all-to-all excluded)."""
        return self.breakdown.embedding_ms


Curves = Mapping[str, Mapping[Strategy, Sequence[TableTraffic]]]


def table_options(
    curves: Curves, row_bytes: Mapping[str, int], budget_bytes: int, cost_model: CostModel
) -> dict[str, list[Option]]:
    """Every table's options, validated (ValueError with the reason for bad input)."""
    if budget_bytes < 0:
        raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
    missing = sorted(set(curves) ^ set(row_bytes))
    if missing:
        raise ValueError(f"curves and row_bytes must name the same tables; differ on {missing}")
    options: dict[str, list[Option]] = {}
    for table, by_strategy in curves.items():
        rb = row_bytes[table]
        if rb <= 0 or rb != cost_model.row_bytes(table):
            raise ValueError(
                f"row_bytes[{table!r}] = {rb} is inconsistent with the cost model's "
                f"{cost_model.row_bytes(table)} bytes per row"
            )
        opts = []
        for strategy, points in by_strategy.items():
            for t in points:
                if t.table != table or t.strategy != Strategy(strategy):
                    raise ValueError(
                        f"curves[{table!r}][{Strategy(strategy).value}] holds traffic of "
                        f"{t.table!r}/{t.strategy.value}"
                    )
                opts.append(Option(t, t.hbm_rows * rb, cost_model.table_cost(t)))
        if not opts:
            raise ValueError(f"table {table!r} has no options")
        options[table] = sorted(opts, key=lambda o: (o.hbm_bytes, o.f))
    need = sum(o[0].hbm_bytes for o in options.values())
    if need > budget_bytes:
        raise ValueError(f"budget_bytes {budget_bytes} < {need}, the fewest bytes any plan needs")
    return options


def _hull(bytes_: np.ndarray, weight: np.ndarray) -> list[int]:
    """Indices of the lower convex hull of (bytes, weight), from the fewest bytes to the
    least weight, weight strictly decreasing (options sorted by bytes)."""
    start = int(np.flatnonzero(bytes_ == bytes_[0])[np.argmin(weight[bytes_ == bytes_[0]])])
    hull = [start]
    for i in range(len(bytes_)):
        if bytes_[i] <= bytes_[hull[-1]] or weight[i] >= weight[hull[-1]] - _EPS:
            continue
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b when it lies on or above the segment a -> i
            lhs = (weight[b] - weight[a]) * (bytes_[i] - bytes_[a])
            if lhs >= (weight[i] - weight[a]) * (bytes_[b] - bytes_[a]) - _EPS:
                hull.pop()
            else:
                break
        hull.append(i)
    return hull


def _greedy(
    arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]], lam: float, budget: int
) -> tuple[list[int], float]:
    """Hull greedy on weight `l + lam h + (1 - lam) b` = `lam f + (1 - lam) g`; returns the
    picks and the LP relaxation's value (a lower bound of the separable problem)."""
    hulls, picks = [], []
    spent, value = 0, 0.0
    for b, f, g in arrays:
        w = lam * f + (1 - lam) * g
        hull = _hull(b, w)
        hulls.append((hull, b, w))
        picks.append(hull[0])
        spent += int(b[hull[0]])
        value += float(w[hull[0]])
    segments = []  # (-saving per byte, table, hull position)
    for k, (hull, b, w) in enumerate(hulls):
        rate = math.inf
        for j in range(1, len(hull)):
            db = int(b[hull[j]] - b[hull[j - 1]])
            rate = min(rate, (w[hull[j - 1]] - w[hull[j]]) / db)  # non-increasing in j
            segments.append((-rate, k, j))
    segments.sort()
    lp, stuck = None, set()
    for neg_rate, k, j in segments:  # per table, slopes fall with j: order is respected
        if k in stuck:
            continue
        hull, b, w = hulls[k]
        db = int(b[hull[j]] - b[hull[j - 1]])
        if spent + db > budget:
            if lp is None:
                lp = value + neg_rate * (budget - spent)
            stuck.add(k)
            continue
        spent += db
        value += float(w[hull[j]] - w[hull[j - 1]])
        picks[k] = hull[j]
    return picks, value if lp is None else lp


def objective(f: float, g: float, const: float) -> float:
    return max(f, g - const)


def _descend(
    arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    picks: list[int],
    budget: int,
    const: float,
    pairs: bool = False,
) -> list[int]:
    """Switches of one table (or, with `pairs`, of two tables at once) that fit and lower the
    true objective, taken until none does."""
    picks = list(picks)
    f = sum(float(a[1][p]) for a, p in zip(arrays, picks, strict=True))
    g = sum(float(a[2][p]) for a, p in zip(arrays, picks, strict=True))
    spent = sum(int(a[0][p]) for a, p in zip(arrays, picks, strict=True))
    groups = [(k,) for k in range(len(arrays))]
    if pairs:
        groups += [(i, j) for i in range(len(arrays)) for j in range(i + 1, len(arrays))]
    for _ in range(50):
        improved = False
        for group in groups:
            nb, nf, ng = spent, f, g
            for k in group:  # broadcast: one axis per table of the group
                b, fa, ga = arrays[k]
                p, shape = picks[k], [1] * len(group)
                shape[group.index(k)] = -1
                nb = nb - b[p] + b.reshape(shape)
                nf = nf - fa[p] + fa.reshape(shape)
                ng = ng - ga[p] + ga.reshape(shape)
            val = np.maximum(nf, ng - const)
            val = np.where(nb > budget, np.inf, val)
            best = np.unravel_index(int(np.argmin(val)), val.shape)
            cur = objective(f, g, const)
            if val[best] < cur - 1e-12 * max(1.0, abs(cur)):
                f, g, spent = float(nf[best]), float(ng[best]), int(nb[best])
                for k, i in zip(group, best, strict=True):
                    picks[k] = int(i)
                improved = True
        if not improved:
            break
    return picks


def choose_strategies(
    curves: Curves,
    row_bytes: Mapping[str, int],
    budget_bytes: int,
    cost_model: CostModel,
    *,
    grid: int = 17,
) -> Choice:
    """Per table the (strategy, HBM size) minimising the model's embedding ms per step.

    Args:
        curves: per table, per strategy, `TableTraffic` at the simulated HBM sizes.
        row_bytes: HBM bytes per row of each table; must equal `cost_model.row_bytes`.
        budget_bytes: HBM bytes for hot rows and caches, all ranks together.
        cost_model: maps traffic to ms.
        grid: number of `lam` values in [0, 1] (module docstring).
    """

    def solve(
        options: dict[str, list[Option]], const: float, pairs: bool = True
    ) -> tuple[list[int], float]:
        arrays = [_arrays(o) for o in options.values()]
        best: tuple[float, list[int]] | None = None
        bound = -math.inf
        for lam in np.linspace(0.0, 1.0, max(grid, 2)):
            picks, lp = _greedy(arrays, float(lam), budget_bytes)
            bound = max(bound, lp - (1 - lam) * const)
            picks = _descend(arrays, picks, budget_bytes, const)
            val = _value(arrays, picks, const)
            if best is None or val < best[0]:
                best = (val, picks)
        picks = _descend(arrays, best[1], budget_bytes, const, pairs=True) if best else []
        return (picks if pairs else best[1] if best else []), bound

    return per_cache_kinds(solve, curves, row_bytes, budget_bytes, cost_model)


def per_cache_kinds(
    solve: Callable[..., tuple[list[int], float]],
    curves: Curves,
    row_bytes: Mapping[str, int],
    budget_bytes: int,
    cost_model: CostModel,
) -> Choice:
    """The best of `solve` over every subset S of the cache kinds (`machinery.cache_kind`) the
    options use, each solved with only options whose cache kind is in S: a plan with caches
    of kinds S pays the per-batch machinery `bc` (critical) + `bb` (overlappable) of S, so
    its time is `bc + max(F, G - (C + bc - bb))`, separable again with that constant. `solve`
    returns (picks, a lower bound of its objective); the bound is the least `bc + bound`.
    A `solve` taking `pairs` is run without its pair descent on every subset, then with it on
    the best subset only (the pair descent is the costly part)."""
    options = table_options(curves, row_bytes, budget_bytes, cost_model)
    kinds = sorted({o.cost.cache for opts in options.values() for o in opts if o.cost.cache})
    best: tuple[float, dict[str, list[Option]], float, list[int]] | None = None
    bound = math.inf
    cheap = {"pairs": False} if "pairs" in inspect.signature(solve).parameters else {}
    for subset in itertools.chain.from_iterable(
        itertools.combinations(kinds, r) for r in range(len(kinds) + 1)
    ):
        allowed = {t: [o for o in opts if o.cost.cache in (None, *subset)]
                   for t, opts in options.items()}  # fmt: skip
        need = sum(o[0].hbm_bytes for o in allowed.values() if o)
        if not all(allowed.values()) or need > budget_bytes:
            continue
        crit, back = cost_model.machinery.batch_ms(subset)
        const = _const(options, cost_model) + crit - back
        picks, low = solve(allowed, const, **cheap)
        bound = min(bound, crit + low)
        chosen = {t: allowed[t][p] for t, p in zip(allowed, picks, strict=True)}
        ms = cost_model.evaluate(o.cost for o in chosen.values()).embedding_ms
        if best is None or ms < best[0]:
            best = (ms, allowed, const, picks)
    assert best is not None  # the subset of every kind is the unrestricted problem
    _, allowed, const, picks = best
    if cheap:
        picks, _ = solve(allowed, const)
    chosen = {t: allowed[t][p] for t, p in zip(allowed, picks, strict=True)}
    result = _result(chosen, options, budget_bytes, cost_model, -math.inf)
    return dataclasses.replace(result, lower_bound_ms=min(bound, result.embedding_ms))


def _arrays(opts: list[Option]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.array([o.hbm_bytes for o in opts], dtype=np.int64),
        np.array([o.f for o in opts]),
        np.array([o.g for o in opts]),
    )


def _const(options: Mapping[str, list[Option]], cost_model: CostModel) -> float:
    """`C`: all-to-all + dense ms, the same for every choice."""
    return sum(o[0].cost.a2a_ms for o in options.values()) + cost_model.dense_ms


def _value(arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]], picks: list[int],
           const: float) -> float:
    f = sum(float(a[1][p]) for a, p in zip(arrays, picks, strict=True))
    g = sum(float(a[2][p]) for a, p in zip(arrays, picks, strict=True))
    return objective(f, g, const)


def _result(
    chosen: dict[str, Option],
    options: Mapping[str, list[Option]],
    budget_bytes: int,
    cost_model: CostModel,
    bound: float,
) -> Choice:
    breakdown = cost_model.evaluate(o.cost for o in chosen.values())
    const = breakdown.a2a_ms + breakdown.dense_ms
    f_all = sum(o.f for o in chosen.values())
    g_all = sum(o.g for o in chosen.values())
    tables = {}
    for table, pick in chosen.items():
        others = [o for o in options[table] if o.strategy != pick.strategy]
        fitting = [o for o in others if o.hbm_bytes <= pick.hbm_bytes]
        runner = min(
            fitting or others,
            key=lambda o: objective(f_all - pick.f + o.f, g_all - pick.g + o.g, const),
            default=None,
        )
        runner_bd = None
        if runner is not None:
            runner_bd = cost_model.evaluate(
                (runner if t == table else o).cost for t, o in chosen.items()
            )
        tables[table] = TableChoice(
            table=table,
            chosen=pick,
            chosen_ms=breakdown.table_ms(table),
            runner_up=runner,
            runner_up_ms=None if runner_bd is None else runner_bd.table_ms(table),
            runner_up_model_ms=None if runner_bd is None else runner_bd.embedding_ms,
            runner_up_fits=bool(fitting),
        )
    return Choice(
        tables=tables,
        breakdown=breakdown,
        budget_bytes=budget_bytes,
        hbm_bytes=sum(o.hbm_bytes for o in chosen.values()),
        lower_bound_ms=min(bound, breakdown.embedding_ms),
    )
