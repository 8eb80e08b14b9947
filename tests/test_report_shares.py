"""The report's "served from HBM": out of sample, one number per plan, and the evidence behind
the strategy choice.

References are plain: the share of a held-out window's lookups that the plan's rows take
(counted here with numpy), and the numbers each section of the printed report shows.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import tables_of
from torchrec_hot import (
    HotPlan,
    HotPlanner,
    PopularityProfile,
    build_report,
    format_report,
    make_topology,
)
from torchrec_hot.data.workloads import zipf_batches
from torchrec_hot.planner.strategy.evaluation import TUNED_STOCK, StrategyOptions
from torchrec_hot.planner.strategy.machinery import NO_MACHINERY
from torchrec_hot.planner.strategy.types import Strategy
from torchrec_hot.report.rows import MIN_EVIDENCE_BATCHES

PROPS = settings(max_examples=6, deadline=None, derandomize=True)
SAMPLES = 16_384  # lookups per table and window: one binomial SE of a share is <= 0.004
# |report - held-out| <= 0.03: the held-out share's own noise and the estimate's differ by
# ~0.0055 (one SE of the difference at SAMPLES); 0.03 leaves ~5 SE for both
TOLERANCE = 0.03


def _profile(tables, seed: int, window: int, batches: int, batch: int, trace: int = 0):
    profile = PopularityProfile(tables, trace_max_ids=trace)
    return profile.update_all(zipf_batches(tables, batches, batch, 1.1, seed=seed, window=window))


def _check_held_out(sizes, alpha, budget_share, seed) -> float:
    """Plans a window of Zipf(`alpha`) ids and checks the report's share of every table against
    the share of a held-out window's lookups the same rows take; returns the largest amount by
    which the in-sample share over-states the held-out one."""
    tables = tables_of(sizes, 16)
    window = {"num_batches": 8, "batch_size": SAMPLES // 8, "alpha": alpha, "seed": seed}
    profile = PopularityProfile(tables).update_all(zipf_batches(tables, window=0, **window))
    held = PopularityProfile(tables).update_all(zipf_batches(tables, window=1, **window))
    budget = int(budget_share * sum(s * 16 * 4 for s in sizes) / 2)
    plan = HotPlanner(make_topology(2, "cuda"), budget, batch_size=1024,
                      compare_with_stock=False).plan(tables, profile)  # fmt: skip
    report = build_report(plan)
    in_sample_off = 0.0
    for row, tp in zip(report.ours.tables, plan.tables, strict=True):
        counts = held.counts(tp.name)
        actual = counts[tp.hot_ids].sum() / counts.sum()
        assert abs(row.hbm_lookup_pct / 100 - actual) <= TOLERANCE, (tp.name, row, actual)
        in_sample_off = max(in_sample_off, tp.hot_lookup_share - actual)
    total = sum(tp.lookups for tp in plan.tables)
    assert sum(r.hbm_lookups for r in report.ours.ranks) == pytest.approx(
        report.ours.hbm_lookup_share * total)
    return in_sample_off


@PROPS
@given(
    sizes=st.lists(st.integers(2_000, 60_000), min_size=2, max_size=4),
    alpha=st.floats(0.9, 1.3),
    budget_share=st.floats(0.02, 0.3),
    seed=st.integers(0, 2**20),
)
def test_report_share_is_the_held_out_share(sizes, alpha, budget_share, seed):
    _check_held_out(sizes, alpha, budget_share, seed)


def test_report_share_is_not_the_in_sample_share():
    """Large tables whose hot set takes rows seen once or twice: the in-sample share is off by
    far more than the tolerance, the report's is not."""
    assert _check_held_out([50_000, 40_000], 1.05, 0.15, 7) > 3 * TOLERANCE


def _shares_in_text(text: str) -> dict[str, str]:
    """ours / stock / tuned stock as the summary lines and the strategy section's model block
    print them."""
    summary = re.search(r"torchrec-hot ([\d.]+)% vs stock TorchRec ([\d.]+)%", text)
    tuned = re.search(r"torchrec-hot ([\d.]+)% vs stock TorchRec, embedding offloading "
                      r"([\d.]+)% \(([\d.]+)x\)", text)  # fmt: skip
    assert summary is not None and tuned is not None, text
    model = text.split("[modeled embedding time per step, whole model]")[1]
    rows = {ln.split("  ")[0].strip(): ln.split() for ln in model.splitlines()[2:] if ln.strip()}
    return {
        "summary ours": summary.group(1),
        "summary stock": summary.group(2),
        "strategy ours": rows["ours"][-3],
        "strategy stock": rows["stock TorchRec"][-3],
        "summary tuned": tuned.group(2),
        "summary tuned ratio": tuned.group(3),
        "strategy tuned": rows[TUNED_STOCK][-3],
    }


@pytest.fixture(scope="module")
def workload():
    tables = tables_of([30_000, 20_000, 12_000], 16)
    seed = int(np.random.default_rng().integers(2**20))
    profile = _profile(tables, seed, 0, 8, 1024)
    holdout = _profile(tables, seed, 1, 16, 512, trace=1 << 20)
    return seed, tables, profile, holdout


@pytest.mark.parametrize("allowed", [(Strategy.LRU_CACHE,), (Strategy.STATIC,)])
def test_one_number_for_ours_and_stock_in_every_section(workload, allowed):
    """Every table cached (only caches allowed, the budget too small for a whole table), or
    none (static only): the summary and the strategy section print the same shares."""
    seed, tables, profile, holdout = workload
    total = sum(t.num_embeddings * 16 * 4 for t in tables)
    planner = HotPlanner(make_topology(2, "cuda"), int(0.05 * total / 2), batch_size=512,
                         strategies=StrategyOptions(holdout=holdout, strategies=allowed,
                                                    machinery=NO_MACHINERY))  # caches stay
    plan = planner.plan(tables, profile)
    kinds = {t.strategy for t in plan.tables}
    assert kinds == ({"lru_cache"} if allowed == (Strategy.LRU_CACHE,) else {"static"}), (
        seed, kinds)
    report = build_report(plan)
    text = format_report(report)
    shares = _shares_in_text(text)
    assert shares["summary ours"] == shares["strategy ours"], (seed, shares)
    assert shares["summary stock"] == shares["strategy stock"], (seed, shares)
    assert shares["summary tuned"] == shares["strategy tuned"], (seed, shares)
    # tuned stock: its tables' shares (its caches' simulated hit rates) weighted by the
    # profile's lookups, as plain numpy; ours / tuned stock as the ratio
    tuned = report.tuned_stock
    assert tuned is not None and tuned.error is None
    by_tuned = plan.strategies.tuned_stock_hit_rate
    assert set(by_tuned) == {t.name for t in tables}
    lookups_of = np.array([tp.lookups for tp in plan.tables], dtype=np.float64)
    pct = np.array([r.hbm_lookup_pct for r in tuned.tables])
    assert pct == pytest.approx([100 * by_tuned[tp.name] for tp in plan.tables])
    expected = float((pct / 100 * lookups_of).sum() / lookups_of.sum())
    assert float(shares["summary tuned"]) == pytest.approx(100 * expected, abs=0.006)
    ratio = report.ours.hbm_lookup_share / tuned.hbm_lookup_share
    assert shares["summary tuned ratio"] == f"{ratio:.2f}"
    assert sum(r.hbm_lookups for r in tuned.ranks) == pytest.approx(expected * lookups_of.sum())
    assert text.count("lookups from HBM: expected share") == 1  # the definition, once
    # per table and per rank, the same definition: caches count their hits on their shards
    lookups = sum(tp.lookups for tp in plan.tables)
    served = sum(r.hbm_lookups for r in report.ours.ranks)
    assert served == pytest.approx(report.ours.hbm_lookup_share * lookups)
    assert served > 0
    by_table = {t.table: t.hbm_hit_rate for t in report.strategies.tables}
    for row in report.ours.tables:
        assert row.hbm_lookup_pct == pytest.approx(100 * by_table[row.table])
    if allowed == (Strategy.STATIC,):  # static rows: their share of the hold-out's lookups
        for tp, row in zip(plan.tables, report.ours.tables, strict=True):
            counts = holdout.counts(tp.name)
            assert row.hbm_lookup_pct == pytest.approx(
                100 * counts[tp.hot_ids].sum() / counts.sum())


@pytest.mark.parametrize("batches,warned", [(3, True), (16, False)])
def test_the_strategy_section_says_how_many_held_out_batches_it_rests_on(
    workload, batches, warned
):
    seed, tables, profile, _ = workload
    holdout = _profile(tables, seed, 1, batches, 512, trace=1 << 20)
    total = sum(t.num_embeddings * 16 * 4 for t in tables)
    planner = HotPlanner(make_topology(2, "cuda"), int(0.2 * total / 2), batch_size=256,
                         compare_with_stock=False,
                         strategies=StrategyOptions(holdout=holdout))  # fmt: skip
    text = format_report(build_report(plan := planner.plan(tables, profile)))
    measured = batches - max(1, batches // 4)  # a global batch is 2 x 256: one trace batch
    assert {t.measured_batches for t in plan.strategies.tables} == {measured}
    assert f"each choice measured on {measured} held-out global batch(es)" in text
    assert ("WARNING: only" in text) == warned == (measured < MIN_EVIDENCE_BATCHES)
    if warned:
        assert "--trace-ids" in text and "--batch-size" in text


def test_tuned_stock_line_on_cuda_not_computed_on_cpu(workload):
    """CUDA: a tuned stock block and summary line; CPU: the summary says it was not computed
    (no zeros printed for it)."""
    _, tables, profile, _ = workload
    total = sum(t.num_embeddings * 16 * 4 for t in tables)
    texts = {}
    for device in ("cuda", "cpu"):
        plan = HotPlanner(make_topology(2, device), int(0.05 * total / 2),
                          batch_size=512).plan(tables, profile)  # fmt: skip
        texts[device] = format_report(build_report(plan))
    assert f"[{TUNED_STOCK}] (TorchRec topology hbm_cap" in texts["cuda"]
    assert re.search(r"vs stock TorchRec, embedding offloading [\d.]+%", texts["cuda"])
    assert "not computed" not in texts["cuda"]
    assert f"[{TUNED_STOCK}]" not in texts["cpu"]
    assert "tuned HBM" not in texts["cpu"]
    assert f"{TUNED_STOCK}: not computed (CPU topology" in texts["cpu"]
    assert f"vs {TUNED_STOCK}" not in texts["cpu"]


def test_plan_file_round_trip_keeps_the_report(workload, tmp_path):
    """A plan with both stock comparisons and strategies prints the same report after
    `to_json` / `from_json`; a file from before tuned stock loads and says it predates it."""
    _, tables, profile, holdout = workload
    total = sum(t.num_embeddings * 16 * 4 for t in tables)
    plan = HotPlanner(make_topology(2, "cuda"), int(0.05 * total / 2), batch_size=512,
                      strategies=StrategyOptions(holdout=holdout, machinery=NO_MACHINERY)
                      ).plan(tables, profile)  # fmt: skip
    assert plan.tuned_stock is not None and plan.strategies.tuned_stock_hit_rate
    plan.to_json(path := tmp_path / "plan.json")
    loaded = HotPlan.from_json(path)
    assert loaded.strategies == plan.strategies
    assert format_report(build_report(loaded)) == format_report(build_report(plan))
    doc = json.loads(path.read_text())
    del doc["tuned_stock"], doc["strategies"]["tuned_stock_hit_rate"]
    doc["strategies"]["model_ms"].pop(TUNED_STOCK)
    path.write_text(json.dumps(doc))
    old = format_report(build_report(HotPlan.from_json(path)))
    assert f"{TUNED_STOCK}: not computed (this plan file predates it" in old
