"""Modules torchrec-hot does not split are left to TorchRec's planner, under the one budget:
TestSparseNN with a FeatureProcessedEmbeddingBagCollection (`fp_ebc`), planned for 2 CUDA ranks
on CPU. (Training it under DMP against stock TorchRec: tests/test_whole_model.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.fp_embeddingbag import FeatureProcessedEmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.test_utils import test_model as tm

from torchrec_hot import HotShardingPlanner, PlanDoesNotFitError, PopularityProfile, make_topology
from torchrec_hot.data import zipf_batches

META = torch.device("meta")
FP = EmbeddingBagConfig(name="fp", num_embeddings=20_000, embedding_dim=64, feature_names=["fp"])


def _model(seed: int) -> tm.TestSparseNN:
    rng = np.random.default_rng(seed)
    tables = [EmbeddingBagConfig(name=f"t{i}", num_embeddings=int(rng.integers(30_000, 60_000)),
                                 embedding_dim=64, feature_names=[f"f{i}"]) for i in range(3)]
    return tm.TestSparseNN(tables=[*tables, FP], weighted_tables=[], num_float_features=4,
                           sparse_device=META, max_feature_lengths={"fp": 4})


def _profile(model, seed: int) -> PopularityProfile:
    profile = PopularityProfile.for_model(model)
    tables = [c for c in model.sparse.ebc.embedding_bag_configs()]
    for kjt in zipf_batches([*tables, FP], 4, 512, 1.1, seed=seed):  # fp's ids are dropped
        profile.update(kjt)
    return profile


def _planner(profile, budget: int, **kwargs) -> HotShardingPlanner:
    return HotShardingPlanner(make_topology(2, "cuda"), profile, budget, batch_size=512,
                              compare_with_stock=False, **kwargs)


def test_fp_ebc_is_planned_as_stock_plans_it_and_takes_its_share_of_the_budget():
    seed = int(np.random.default_rng().integers(2**31))
    print("seed", seed)
    model = _model(seed)
    profile = _profile(model, seed)
    assert sorted(t.name for t in profile.tables) == ["t0", "t1", "t2"]
    budget = 12_000_000
    planner = _planner(profile, budget)
    plan = planner.plan(model)
    # the FP module as TorchRec plans it alone, with the same topology and reservation
    alone = EmbeddingShardingPlanner(
        topology=make_topology(2, "cuda"), batch_size=512,
        storage_reservation=FixedPercentageStorageReservation(0.15),
    ).plan(model, [FeatureProcessedEmbeddingBagCollectionSharder()])
    assert str(plan.plan["sparse.fp_ebc"]) == str(alone.plan["sparse.fp_ebc"])
    assert "sparse.ebc.split_ebc" in plan.plan
    used = planner.stock_modules.hbm_by_rank
    assert max(used) > 0 and planner.stock_modules.tables == {"sparse.fp_ebc": ["fp"]}
    hot = planner.hot_plan
    assert hot.hbm_budget_bytes == budget - max(used)
    assert 0 < sum(t.hot_rows for t in hot.tables) < sum(t.num_embeddings for t in hot.tables)
    for rank, hot_bytes in enumerate(hot.hbm_bytes_per_rank):
        assert hot_bytes + used[rank] <= budget, (rank, hot_bytes, used)


def test_a_budget_the_stock_modules_alone_exceed_is_refused_saying_by_how_much():
    model = _model(1)
    with pytest.raises(PlanDoesNotFitError, match=r"\['sparse.fp_ebc'\]\) take \d+ bytes of HBM "
                                                  r"on one rank, \d+ more than the budget"):
        _planner(_profile(model, 1), 1000).plan(model)


def test_user_constraints_of_stock_tables_reach_torchrecs_planner():
    model = _model(2)
    constraints = {"fp": ParameterConstraints(sharding_types=["row_wise"])}
    plan = _planner(_profile(model, 2), 12_000_000, constraints=constraints).plan(model)
    shardings = plan.plan["sparse.fp_ebc"]
    assert shardings["fp"].sharding_type == "row_wise"


def test_a_subclass_of_a_collection_is_refused_with_what_to_do():
    class MyEBC(EmbeddingBagCollection):
        pass

    tables = [EmbeddingBagConfig(name="t", num_embeddings=100, embedding_dim=8,
                                 feature_names=["f"])]
    model = torch.nn.ModuleDict({"ebc": MyEBC(tables=tables, device=META)})
    profile = PopularityProfile(tables)
    with pytest.raises(NotImplementedError, match="neither a stock EmbeddingBagCollection"):
        _planner(profile, 10_000).plan(model, [EmbeddingBagCollectionSharder()])
