"""Strategy choice: greedy against the exact optimum, the overlap coupling, bad input."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrec_hot.planner.strategy.choice import choose_strategies
from torchrec_hot.planner.strategy.cost_model import (
    H100,
    CostModel,
    HardwareSpec,
    TableCostSpec,
)
from torchrec_hot.planner.strategy.exact import choose_strategies_exact
from torchrec_hot.planner.strategy.machinery import NO_MACHINERY
from torchrec_hot.planner.strategy.types import Strategy, TableTraffic

PROPS = settings(max_examples=40, deadline=None, derandomize=True)


def _t(table, strategy, hbm_rows, lookups, unique, uvm=0.0, fetched=0.0, overlap=False):
    return TableTraffic(table=table, strategy=strategy, hbm_rows=int(hbm_rows), lookups=lookups,
                        unique_rows=unique, hbm_hit_rate=1 - uvm / lookups, uvm_lookups=uvm,
                        fetched_rows=fetched, written_back_rows=fetched,
                        fetch_overlappable=overlap)


def _curves(rng: np.random.Generator, n_tables: int, n_sizes: int):
    """Zipf-like curves: misses fall as (1 - (size/rows)^skew); LRU misses 1.3x the static
    rows' (drift makes static worse); look-forward from twice the batch's unique rows."""
    curves, specs = {}, {}
    for i in range(n_tables):
        t = f"t{i}"
        rows, lookups = int(rng.integers(100, 10_000)), float(rng.integers(1_000, 100_000))
        unique, skew = min(rows, lookups) * 0.5, float(rng.uniform(0.1, 0.6))
        drift = float(rng.uniform(0, 0.5))
        sizes = np.unique(np.linspace(0, rows, n_sizes + 1)[1:].astype(int))
        miss = 1 - (sizes / rows) ** skew
        curves[t] = {
            Strategy.ALL_UVM: [_t(t, Strategy.ALL_UVM, 0, lookups, unique, uvm=lookups)],
            Strategy.ALL_HBM: [_t(t, Strategy.ALL_HBM, rows, lookups, unique)],
            Strategy.STATIC: [_t(t, Strategy.STATIC, h, lookups, unique,
                                 uvm=lookups * min(1.0, m * (1 + drift)))
                              for h, m in zip(sizes, miss, strict=True)],
            Strategy.LRU_CACHE: [_t(t, Strategy.LRU_CACHE, h, lookups, unique,
                                    fetched=unique * m * 1.3)
                                 for h, m in zip(sizes, miss, strict=True)],
            Strategy.LOOK_FORWARD: [_t(t, Strategy.LOOK_FORWARD, h, lookups, unique,
                                       fetched=unique * m, overlap=True)
                                    for h, m in zip(sizes, miss, strict=True) if h >= 2 * unique],
        }
        specs[t] = TableCostSpec(dim=int(rng.choice([16, 64, 128])), optimizer_bytes=4)
    return curves, specs


def _case(seed: int, n_tables: int, n_sizes: int, budget_frac: float):
    rng = np.random.default_rng(seed)
    curves, specs = _curves(rng, n_tables, n_sizes)
    model = CostModel(H100, int(rng.choice([1, 8])), specs,
                      batch_per_rank=int(rng.choice([10, 1000])),
                      dense_ms=float(rng.choice([0.0, 0.01])))
    row_bytes = {t: s.row_bytes for t, s in specs.items()}
    total = sum(c[Strategy.ALL_HBM][0].hbm_rows * row_bytes[t] for t, c in curves.items())
    return curves, row_bytes, int(total * budget_frac), model


@PROPS
@given(seed=st.integers(0, 2**31), n_tables=st.integers(1, 4), n_sizes=st.integers(8, 16),
       budget_frac=st.floats(0.0, 1.0))
def test_greedy_is_within_one_percent_of_the_exact_optimum(seed, n_tables, n_sizes, budget_frac):
    curves, row_bytes, budget, model = _case(seed, n_tables, n_sizes, budget_frac)
    greedy = choose_strategies(curves, row_bytes, budget, model)
    exact = choose_strategies_exact(curves, row_bytes, budget, model)
    assert greedy.hbm_bytes <= budget and exact.hbm_bytes <= budget
    assert greedy.lower_bound_ms <= exact.embedding_ms * (1 + 1e-9)  # a valid bound
    assert exact.embedding_ms <= greedy.embedding_ms * (1 + 1e-9)
    assert greedy.embedding_ms <= exact.embedding_ms * 1.01
    brute = _brute_force_ms(curves, row_bytes, budget, model)
    if brute is not None:  # small cases: the exact search is the optimum over every option
        assert exact.embedding_ms == pytest.approx(brute, rel=1e-9)


def _brute_force_ms(curves, row_bytes, budget, model, limit=4000):
    """The least embedding ms over every combination of one traffic point per table within
    `budget` bytes, each scored by `model.evaluate` alone (None above `limit` combinations)."""
    points = [[p for ps in c.values() for p in ps] for c in curves.values()]
    if np.prod([len(p) for p in points]) > limit:
        return None
    best = None
    for combo in itertools.product(*points):
        if sum(p.hbm_rows * row_bytes[p.table] for p in combo) > budget:
            continue
        ms = model.evaluate(combo).embedding_ms
        best = ms if best is None or ms < best else best
    return best


@PROPS
@given(seed=st.integers(0, 2**31), n_tables=st.integers(1, 4), n_sizes=st.integers(1, 4),
       budget_frac=st.floats(0.0, 1.0))
def test_coarse_curves_respect_the_budget_and_the_bound(seed, n_tables, n_sizes, budget_frac):
    curves, row_bytes, budget, model = _case(seed, n_tables, n_sizes, budget_frac)
    greedy = choose_strategies(curves, row_bytes, budget, model)
    exact = choose_strategies_exact(curves, row_bytes, budget, model)
    assert greedy.hbm_bytes <= budget
    assert greedy.lower_bound_ms <= exact.embedding_ms * (1 + 1e-9) <= greedy.embedding_ms * (
        1 + 2e-9)
    brute = _brute_force_ms(curves, row_bytes, budget, model)
    if brute is not None:
        assert exact.embedding_ms == pytest.approx(brute, rel=1e-9)


# Toy: W = 16 B, one rank, link 1e10 B/s: a row over the link costs 1.6e-6 ms; 1 ms dense time
TOY = HardwareSpec("toy", 1e12, 1e10, 1e11, 1e11, 1e10)


def _overlap_case():
    curves = {}
    for t in ("a", "b"):
        curves[t] = {
            Strategy.ALL_UVM: [_t(t, Strategy.ALL_UVM, 0, 1e6, 0.0, uvm=1e6)],  # 1.6 ms link
            Strategy.STATIC: [_t(t, Strategy.STATIC, 100, 1e6, 0.0, uvm=375_000)],  # 0.6 ms
            Strategy.LOOK_FORWARD: [_t(t, Strategy.LOOK_FORWARD, 100, 1e6, 0.0,
                                       fetched=625_000, overlap=True)],  # 1.0 ms background
        }
    spec = TableCostSpec(dim=4)
    model = CostModel(TOY, 1, {"a": spec, "b": spec}, batch_per_rank=1, dense_ms=1.0,
                      machinery=NO_MACHINERY)  # the overlap alone (machinery: its own test)
    return curves, {"a": 16, "b": 16}, model


def test_overlap_couples_tables_one_look_forward_fits_the_window_two_do_not():
    curves, row_bytes, model = _overlap_case()
    choice = choose_strategies(curves, row_bytes, 3200, model)
    exact = choose_strategies_exact(curves, row_bytes, 3200, model)
    picked = sorted(c.chosen.strategy for c in choice.tables.values())
    assert picked == sorted([Strategy.STATIC, Strategy.LOOK_FORWARD])  # not two look-forward
    # HBM ms: forward reads (1e6 look-forward, 625k static hits) + gradient reads (1e6 each)
    ms = 16 / 1e9  # per row read from HBM
    assert choice.breakdown.exposed_ms == 0
    assert choice.embedding_ms == pytest.approx((3.625e6 * ms) + 0.6)
    assert choice.embedding_ms == pytest.approx(exact.embedding_ms)
    # the runner-up of the static table is look-forward at the same bytes: both look-forward
    # expose 2.0 - (1.0 + 4e6 ms) of fetches, so the model takes 1.0 ms
    static = next(c for c in choice.tables.values() if c.chosen.strategy == Strategy.STATIC)
    assert static.runner_up.strategy == Strategy.LOOK_FORWARD and static.runner_up_fits
    assert static.runner_up_model_ms == pytest.approx(1.0)
    assert static.chosen_ms == pytest.approx(1.625e6 * ms + 0.6)
    # with half the budget only one table gets HBM: look-forward, hidden in the window
    half = choose_strategies(curves, row_bytes, 1600, model)
    assert sorted(c.chosen.strategy for c in half.tables.values()) == sorted(
        [Strategy.ALL_UVM, Strategy.LOOK_FORWARD])
    assert half.hbm_bytes == 1600 and half.embedding_ms == pytest.approx(3e6 * ms + 1.6)


def test_bad_input_is_refused_with_the_reason():
    curves, row_bytes, model = _overlap_case()
    with pytest.raises(ValueError, match="budget_bytes must be >= 0"):
        choose_strategies(curves, row_bytes, -1, model)
    with pytest.raises(ValueError, match=r"differ on \['b'\]"):
        choose_strategies(curves, {"a": 16}, 3200, model)
    with pytest.raises(ValueError, match=r"row_bytes\['a'\] = 20 is inconsistent"):
        choose_strategies(curves, {"a": 20, "b": 16}, 3200, model)
    with pytest.raises(ValueError, match="no TableCostSpec for table 'c'"):
        choose_strategies({**curves, "c": curves["a"]}, {**row_bytes, "c": 16}, 3200, model)
    swapped = {"a": curves["b"], "b": curves["b"]}
    with pytest.raises(ValueError, match="holds traffic of 'b'"):
        choose_strategies(swapped, row_bytes, 3200, model)
    static_only = {t: {Strategy.STATIC: c[Strategy.STATIC]} for t, c in curves.items()}
    with pytest.raises(ValueError, match="fewest bytes any plan needs"):
        choose_strategies(static_only, row_bytes, 1600, model)
