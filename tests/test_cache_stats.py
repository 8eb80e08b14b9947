"""CacheStatistics from a profile: exact LRU stack distances, a miss-rate curve that matches
simulated LRU caches, and TorchRec's planner taking it for a fused_uvm_caching table."""

import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingBagConfig
from torchrec.distributed.planner import ParameterConstraints
from torchrec.distributed.types import CacheParams, CacheStatistics

from torchrec_hot import PopularityProfile, make_topology
from torchrec_hot.data.workloads import window_batches
from torchrec_hot.planner.strategy.cache_stats import ProfileCacheStatistics, lru_stack_distances
from torchrec_hot.planner.torchrec_glue import meta_model, run_torchrec_planner

PROPS = settings(max_examples=60, deadline=None, derandomize=True)


def _reference_distances(ids):
    stack: list[int] = []  # most recent last
    out = []
    for x in ids:
        if x in stack:
            out.append(len(stack) - 1 - stack.index(x))
            stack.remove(x)
        else:
            out.append(-1)
        stack.append(x)
    return out


@PROPS
@given(ids=st.lists(st.integers(0, 30), max_size=300))
def test_stack_distances_match_a_plain_lru_stack(ids):
    assert lru_stack_distances(np.array(ids, dtype=np.int64)).tolist() == _reference_distances(ids)


def _lru_miss_rate(batches, capacity: int, warm: int) -> float:
    """FBGEMM-style: each batch's distinct ids looked up in an LRU of `capacity` rows."""
    cache: OrderedDict = OrderedDict()
    misses = lookups = 0
    for b, ids in enumerate(batches):
        for x in np.unique(ids).tolist():
            hit = x in cache
            if hit:
                cache.move_to_end(x)
            else:
                cache[x] = None
                if len(cache) > capacity:
                    cache.popitem(last=False)
            if b >= warm:
                lookups += 1
                misses += not hit
    return misses / lookups


@pytest.mark.parametrize("trace_ids", [20_000, 0])
def test_miss_curve_matches_simulated_lru_caches(trace_ids):
    """With a trace (exact LRU on its runs) and without (reference model only)."""
    table = EmbeddingBagConfig(name="t", num_embeddings=3000, embedding_dim=8, feature_names=["f"])
    profile = PopularityProfile([table], trace_max_ids=trace_ids, trace_run_batches=40)
    for kjt in window_batches([table], 400, 128, 0.9, seed=1):
        profile.update(kjt)
    stats = ProfileCacheStatistics.from_profile(profile, "t")
    fresh = [k.values().numpy() for k in window_batches([table], 400, 128, 0.9, window=1, seed=1)]
    assert stats.expected_lookups == pytest.approx(np.mean([np.unique(b).size for b in fresh]),
                                                   rel=0.05)
    for clf in (0.02, 0.05, 0.1, 0.3):
        simulated = _lru_miss_rate(fresh, int(clf * 3000), warm=100)
        assert stats.expected_miss_rate(clf) == pytest.approx(simulated, abs=0.04), clf
    assert stats.expected_miss_rate(0.0) == 1.0 and stats.expected_miss_rate(1.0) == 0.0
    rates = [stats.expected_miss_rate(c) for c in np.linspace(0, 1, 50)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))
    assert 0.0 < stats.cacheability < 1.0


def test_torchrec_planner_takes_the_statistics_for_fused_uvm_caching():
    tables = [
        EmbeddingBagConfig(name=f"t{i}", num_embeddings=n, embedding_dim=64,
                           feature_names=[f"f{i}"])
        for i, n in enumerate([200_000, 5000])
    ]
    profile = PopularityProfile(tables).update_all(window_batches(tables, 20, 1024, 1.05))
    stats = ProfileCacheStatistics.from_profile(profile, "t0")
    assert isinstance(stats, CacheStatistics)
    assert len(pickle.dumps(stats)) < 64 * 1024  # proposers deep-copy it per option
    calls = []

    class Spy(ProfileCacheStatistics):
        def expected_miss_rate(self, clf: float) -> float:
            calls.append(clf)
            return super().expected_miss_rate(clf)

    spy = copy.deepcopy(stats)
    spy.__class__ = Spy
    constraints = {
        "t0": ParameterConstraints(
            sharding_types=["table_wise"],
            compute_kernels=["fused_uvm_caching"],
            cache_params=CacheParams(load_factor=0.1, stats=spy),
        )
    }
    plan = run_torchrec_planner(meta_model({"": tables}, None), make_topology(2, "cuda"), 1024,
                                0.15, constraints)
    assert plan.plan[""]["t0"].compute_kernel == "fused_uvm_caching"
    assert calls and all(c == pytest.approx(0.1) for c in calls)
