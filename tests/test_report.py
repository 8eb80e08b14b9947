"""Sharding report rows against the plan they describe, and its stock TorchRec column."""

import dataclasses

import numpy as np
import pytest

from tests.builders import tables_of, zipf_profile
from torchrec_hot import HotPlanner, build_report, format_report, make_topology
from torchrec_hot.planner.memory import row_bytes
from torchrec_hot.planner.stock import compare_with_stock

MIB = 2**20


@pytest.fixture(scope="module")
def profiled():
    tables = tables_of([40_000, 9_000, 300, 12], 64)
    seed = int(np.random.default_rng().integers(2**31))
    profile = zipf_profile(tables, seed, num_batches=8, batch_size=1024, alpha=1.1)
    return tables, profile


def test_rows_follow_the_plan(profiled):
    tables, profile = profiled
    plan = HotPlanner(make_topology(4, "cuda"), MIB // 2, batch_size=1024).plan(tables, profile)
    report = build_report(plan)
    assert [r.table for r in report.ours.tables] == [t.name for t in tables]
    for row, tp in zip(report.ours.tables, plan.tables, strict=True):
        assert row.hbm_rows == tp.hot_rows
        assert row.hbm_bytes == tp.hot_rows * tp.row_bytes
        assert row.uvm_bytes == (tp.num_embeddings - tp.hot_rows) * tp.row_bytes
        in_sample = 100.0 * profile.counts(tp.name)[tp.hot_ids].sum() / profile.lookups(tp.name)
        assert row.hbm_lookup_pct == pytest.approx(100.0 * tp.expected_hot_share)
        assert row.hbm_lookup_pct <= in_sample + 1e-9  # out of sample: never above it
        if tp.hot_rows == tp.num_embeddings:
            assert row.hbm_lookup_pct == 100.0
    assert [r.hbm_bytes for r in report.ours.ranks] == list(plan.hbm_bytes_per_rank)
    total = sum(profile.lookups(t.name) for t in tables)
    served = sum(r.hbm_lookups for r in report.ours.ranks)
    assert served == pytest.approx(report.ours.hbm_lookup_share * total)
    # the stock column: a real TorchRec plan of the unsplit tables
    assert report.stock is not None and report.stock.error is None
    assert {r.table for r in report.stock.tables} == {t.name for t in tables}
    assert sum(r.hbm_lookups for r in report.stock.ranks) == pytest.approx(
        report.stock.hbm_lookup_share * total)
    text = format_report(report)
    assert "[torchrec-hot]" in text and "[stock TorchRec]" in text and "[per rank]" in text
    assert f"torchrec-hot {100 * report.ours.hbm_lookup_share:.2f}% vs stock TorchRec" in text


def test_stock_without_a_plan_is_reported_with_torchrecs_reason(profiled):
    tables, profile = profiled
    plan = HotPlanner(make_topology(2, "cuda"), MIB, batch_size=1024).plan(tables, profile)
    # 1 MiB of HBM per GPU: TorchRec's I/O buffers at batch 65536 alone exceed it
    stock = compare_with_stock(
        {"": tables}, {t.name: profile.counts(t.name) for t in tables},
        {t.name: row_bytes(t, None) for t in tables}, make_topology(2, "cuda", hbm_cap=MIB),
        65536, 0.15, None,
    )
    assert stock.sharding_plan is None and "Unable to find a plan" in stock.error
    report = build_report(dataclasses.replace(plan, stock=stock))
    assert report.stock is not None and report.stock.error == stock.error
    text = format_report(report)
    assert "[stock TorchRec] no plan: TorchRec's planner found none." in text
    assert "TorchRec said: " + stock.error.splitlines()[0] in text
    summary = text.splitlines()[-2]  # the last line compares with tuned stock
    assert summary.endswith("stock TorchRec: no plan fits this budget"), summary
