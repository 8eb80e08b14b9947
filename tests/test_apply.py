"""apply_hot_plan: swaps the right module, refuses a plan that does not fit the model."""

import numpy as np
import pytest
import torch
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from tests.builders import hot_plan, tables_of, zipf_profile
from torchrec_hot import (
    HotColdEmbeddingBagCollection,
    HotPlan,
    apply_hot_plan,
)

SIZES, DIM = [3000, 200, 7], 16


class _Model(nn.Module):
    def __init__(self, tables, device: str) -> None:
        super().__init__()
        self.sparse = nn.Module()
        self.sparse.ebc = EmbeddingBagCollection(tables=tables, device=torch.device(device))
        self.dense = nn.Linear(4, 4)


def _plan(tables: list[EmbeddingBagConfig]) -> HotPlan:
    """A CPU plan (2 ranks, 16 KiB each) of `sparse.ebc` from a fresh Zipf profile."""
    seed = int(np.random.default_rng().integers(2**31))
    plan, _ = hot_plan(tables, zipf_profile(tables, seed), budget=16 * 1024, batch_size=64,
                       module_path="sparse.ebc")
    return plan


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_swaps_the_planned_module_and_keeps_weights_and_optimizer(device):
    tables = tables_of(SIZES, DIM)
    model = _Model(tables, device)
    apply_optimizer_in_backward(RowWiseAdagrad, model.sparse.ebc.parameters(), {"lr": 0.02})
    before = {k: v.clone() for k, v in model.sparse.ebc.state_dict().items()}
    plan = _plan(tables)
    out = apply_hot_plan(model, plan)
    assert out is model and isinstance(model.sparse.ebc, HotColdEmbeddingBagCollection)
    assert model.sparse.ebc.placements()["t0"].value == "split"
    for p in model.sparse.ebc.split_module.parameters():
        assert p._optimizer_classes == [RowWiseAdagrad]
        assert p._optimizer_kwargs == [{"lr": 0.02}]
    if device == "cpu":
        after = model.sparse.ebc.state_dict()
        assert sorted(after) == sorted(before)
        for k in before:
            assert torch.equal(after[k], before[k])


def test_a_plan_that_does_not_match_the_model_touches_nothing():
    plan = _plan(tables_of(SIZES, DIM))
    model = _Model(tables_of([3001, 200], DIM), "cpu")
    original = model.sparse.ebc
    with pytest.raises(ValueError) as err:
        apply_hot_plan(model, plan)
    msg = str(err.value)
    assert "table 't0': model has 3001 rows, plan 3000" in msg
    assert "table 't2' is in the plan but not in the model" in msg
    assert model.sparse.ebc is original

    other = _Model(tables_of(SIZES, DIM), "cpu")
    other.sparse.ebc = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="not an EmbeddingBagCollection"):
        apply_hot_plan(other, plan)
