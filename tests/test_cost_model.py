"""Cost model terms against hand computations, the issue's model facts, and TorchRec's view."""

import pytest
import torch
from torchrec import EmbeddingBagConfig
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.planner.constants import kernel_bw_lookup
from torchrec.optim import RowWiseAdagrad

from torchrec_hot.planner.memory import row_bytes
from torchrec_hot.planner.strategy.cost_model import (
    A100,
    H100,
    V100,
    CostModel,
    HardwareSpec,
    TableCostSpec,
)
from torchrec_hot.planner.strategy.types import Strategy, TableTraffic

# round numbers: per rank hbm 1e12 B/s, link 1e10 B/s (ddr faster), network 1e11 B/s
TOY = HardwareSpec("toy", hbm_bw=1e12, host_link_bw=1e10, ddr_bw=1e11, intra_host_bw=1e11,
                   inter_host_bw=1e10)


def _traffic(strategy=Strategy.STATIC, table="t", **kw) -> TableTraffic:
    base = dict(hbm_rows=0, lookups=1000.0, unique_rows=300.0, hbm_hit_rate=0.0,
                uvm_lookups=0.0, fetched_rows=0.0, written_back_rows=0.0)
    return TableTraffic(table=table, strategy=strategy, **{**base, **kw})


def _model(spec: TableCostSpec, tables=("t",), **kw) -> CostModel:
    return CostModel(TOY, 2, {t: spec for t in tables}, batch_per_rank=10, **kw)


def test_every_term_matches_a_hand_computation():
    # W = 4 x 4 = 16 B, S = 4 B (row-wise, on device); 2 ranks: all-ranks bytes/ms are
    # hbm 2e12 / 1e3 = 2e9 and link 2e10 / 1e3 = 2e7
    model = _model(TableCostSpec(dim=4, optimizer_bytes=4))
    cost = model.table_cost(_traffic(uvm_lookups=100.0, hbm_hit_rate=0.9))
    assert cost.fwd_hbm_ms == pytest.approx(900 * 16 / 2e9)  # (L - U) W
    assert cost.fwd_uvm_ms == pytest.approx(100 * 16 / 2e7)  # U W
    assert cost.bwd_grad_ms == pytest.approx(1000 * 4 * 4 / 2e9)  # L D o
    # Q_uvm = min(100, 300) = 100, Q_hbm = 200; state of all 300 rows in HBM
    assert cost.bwd_hbm_ms == pytest.approx(2 * (200 * 16 + 300 * 4) / 2e9)
    assert cost.bwd_uvm_ms == pytest.approx(100 * 16 / 2e7)  # one direction, full duplex
    assert cost.fill_ms == 0 and cost.background_ms == 0
    # a2a: G = 20 samples x 4 x 4 B = 320 B; 2 (n-1)/n^2 = 0.5; intra-host 1e11 B/s
    assert cost.a2a_ms == pytest.approx(320 * 0.5 / 1e11 * 1e3)
    assert cost.link_bytes == pytest.approx(100 * 16 + 2 * 100 * 16)
    bd = model.evaluate([cost])
    assert bd.embedding_ms == pytest.approx(cost.hbm_ms + cost.link_ms)


def test_fills_and_write_backs_share_the_full_duplex_link():
    model = _model(TableCostSpec(dim=4))
    fills = model.table_cost(_traffic(Strategy.LRU_CACHE, fetched_rows=100.0,
                                      written_back_rows=60.0))
    assert fills.fill_ms == pytest.approx(100 * 16 / 2e7)
    backs = model.table_cost(_traffic(Strategy.LRU_CACHE, fetched_rows=60.0,
                                      written_back_rows=100.0))
    assert backs.fill_ms == pytest.approx(100 * 16 / 2e7)
    assert backs.fwd_uvm_ms == 0 and backs.fwd_hbm_ms == pytest.approx(1000 * 16 / 2e9)


def test_non_row_wise_state_crosses_the_link_under_a_cache():
    adam = TableCostSpec(dim=4, optimizer_bytes=32, state_on_device=False)
    model = _model(adam)
    cache = model.table_cost(_traffic(Strategy.LRU_CACHE))
    assert cache.bwd_uvm_ms == pytest.approx(300 * 32 / 2e7)  # every updated row's state
    assert cache.bwd_hbm_ms == pytest.approx(2 * 300 * 16 / 2e9)  # weights in the cache
    hbm = model.table_cost(_traffic(Strategy.ALL_HBM))
    assert hbm.bwd_uvm_ms == 0 and hbm.bwd_hbm_ms == pytest.approx(2 * 300 * 48 / 2e9)


def test_bar_static_split_forward_is_2_2x_all_hbm_and_5x_better_than_stock():
    """Forward rows x 512 B over HBM at 3.35 TB/s and over PCIe at 64 GB/s (issue 5 bars)."""
    model = CostModel(H100, 8, {"t": TableCostSpec(dim=128)}, batch_per_rank=8192)
    assert TableCostSpec(dim=128).weight_bytes == 512

    def fwd(hit: float) -> float:
        cost = model.table_cost(_traffic(lookups=1e6, unique_rows=1e5,
                                         uvm_lookups=1e6 * (1 - hit)))
        return cost.fwd_hbm_ms + cost.fwd_uvm_ms

    static, stock, all_hbm = fwd(0.977), fwd(0.808), fwd(1.0)
    assert static / all_hbm == pytest.approx(0.977 + 0.023 * 3.35e12 / 64e9)
    assert 2.1 < static / all_hbm < 2.3
    assert 4.9 < stock / static < 5.1


def test_overlap_hides_fetches_below_the_window_and_exposes_the_excess():
    spec = TableCostSpec(dim=4)
    model = _model(spec, tables=("hot", "lf"))
    hot = model.table_cost(_traffic(Strategy.ALL_HBM, table="hot", lookups=1e6,
                                    unique_rows=1e5, hbm_hit_rate=1.0))
    window = hot.hbm_ms + 2 * hot.a2a_ms  # both tables' all-to-all, no dense time

    def look_forward(rows: float, misses: float = 0.0):
        return model.table_cost(_traffic(Strategy.LOOK_FORWARD, table="lf", lookups=misses,
                                         unique_rows=0.0, fetched_rows=rows, uvm_lookups=misses,
                                         fetch_overlappable=True,
                                         misses_current_batch=misses))

    per_row = 16 / 2e7  # ms per fetched row, all ranks
    small = look_forward(0.5 * window / per_row)
    bd = model.evaluate([hot, small])
    assert bd.window_ms == pytest.approx(window)
    assert bd.exposed_ms == 0 and bd.embedding_ms == pytest.approx(hot.hbm_ms)
    large = look_forward(3 * window / per_row)
    bd = model.evaluate([hot, large])
    assert bd.exposed_ms == pytest.approx(2 * window)
    assert bd.embedding_ms == pytest.approx(hot.hbm_ms + 2 * window)
    assert bd.exposed_by_table == {"hot": 0.0, "lf": pytest.approx(2 * window)}
    # dense compute widens the window; current-batch misses (read in place from UVM, as the
    # simulator reports them) are on the critical path, the fetches stay in the background
    dense = CostModel(TOY, 2, {"hot": spec, "lf": spec}, 10, dense_ms=window)
    assert dense.evaluate([hot, large]).exposed_ms == pytest.approx(window)
    stalled = look_forward(100.0, misses=40.0)
    assert stalled.fill_ms == 0 and stalled.fwd_uvm_ms == pytest.approx(40 * per_row)
    assert stalled.background_ms == pytest.approx(100 * per_row)


def test_torchrec_kernel_bandwidths():
    assert H100.hbm_bw == pytest.approx(3.35e12) and H100.host_link_bw == pytest.approx(64e9)
    # TorchRec's topology counts bytes/ms
    bw = {k: kernel_bw_lookup("cuda", k.value, H100.hbm_bw / 1e3, H100.ddr_bw / 1e3,
                              H100.host_link_bw / 1e3) * 1e3
          for k in (EmbeddingComputeKernel.FUSED, EmbeddingComputeKernel.FUSED_UVM)}
    spec = TableCostSpec(dim=128)
    # all-HBM forward = TorchRec's fused bandwidth; all-UVM forward = fused_uvm's with e = 0.1
    model = CostModel(H100, 1, {"t": spec}, 1, uvm_efficiency=0.1)
    hbm = model.table_cost(_traffic(Strategy.ALL_HBM, lookups=1e6))
    uvm = model.table_cost(_traffic(Strategy.ALL_UVM, lookups=1e6, uvm_lookups=1e6))
    assert hbm.fwd_hbm_ms == pytest.approx(1e6 * 512 / bw[EmbeddingComputeKernel.FUSED] * 1e3)
    assert uvm.fwd_uvm_ms == pytest.approx(1e6 * 512 / bw[EmbeddingComputeKernel.FUSED_UVM] * 1e3)
    # 16 ranks on 8-GPU hosts: the all-to-all runs at the inter-host bandwidth
    assert CostModel(H100, 16, {"t": spec}, 1, local_world_size=8).network_bw == 50e9


def test_presets_and_table_spec_from_config_agree_with_the_planner_row_bytes():
    assert (H100.hbm_bw, H100.host_link_bw) == (3.35e12, 64e9)
    assert (A100.hbm_bw, A100.host_link_bw) == (2.039e12, 32e9)
    assert (V100.hbm_bw, V100.host_link_bw) == (900e9, 16e9)
    config = EmbeddingBagConfig(name="t", embedding_dim=128, num_embeddings=10,
                                feature_names=["a", "b"])
    for optimizer, on_device in ((None, True), (torch.optim.SGD, True),
                                 (RowWiseAdagrad, True), (torch.optim.Adam, False)):
        spec = TableCostSpec.from_config(config, optimizer)
        assert spec.row_bytes == row_bytes(config, optimizer)
        assert spec.state_on_device is on_device and spec.num_features == 2


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="hbm_bw"):
        HardwareSpec("bad", 0.0, 1.0, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="world_size"):
        CostModel(TOY, 0, {}, 1)
    model = _model(TableCostSpec(dim=4))
    with pytest.raises(ValueError, match="no TableCostSpec for table 'other'"):
        model.table_cost(_traffic(table="other"))
    with pytest.raises(ValueError, match="uvm_lookups > lookups"):
        model.table_cost(_traffic(uvm_lookups=2000.0))
    with pytest.raises(ValueError, match="fetched_rows < 0"):
        model.table_cost(_traffic(fetched_rows=-1.0))
    with pytest.raises(ValueError, match="table twice"):
        model.evaluate([_traffic(), _traffic()])
