"""HotColdEmbeddingBagCollection against a stock EmbeddingBagCollection holding the same weights.

What is exact and what is within tolerance:
* forward: within 1e-6 (absolute), not bit-exact: a split bag is pooled as (sum of its hot rows)
  + (sum of its cold rows), a different float summation order than the stock bag's.
* gradients of the merged logical weights: within 1e-6 for arbitrary float data. Not bit-exact in
  general, and not because of the split: ATen's CPU `embedding_bag` backward (the stock unsharded
  EBC) adds the contributions of a repeated id in the order of an unstable `sort` of the whole
  index array, so the stock gradient's last bit already depends on the batch layout (a 17-id
  batch measured 6e-8 off). With "dyadic" data (upstream gradients k/8, weights k/4, MEAN bag
  lengths in {1, 2, 4}) every sum is exact in float32, so any order gives the same bits: there
  the merged gradients are checked bit-exact (torch.equal), which proves every id's contribution
  reaches the right row with the right scale.
* weights after SGD (with momentum) / Adagrad / row-wise Adagrad steps: bit-exact on dyadic data;
  within 1e-6 for a nonlinear loss on arbitrary data (checked too).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    KeyedJaggedTensor,
    PoolingType,
)
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from tests.builders.modules import (
    assert_weights_equal,
    build,
    dyadic,
    models,
    random_kjt,
    stock_weights,
)
from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection
from torchrec_hot.tables.split import COLD_SUFFIX, HOT_SUFFIX, SPLIT_MODULE_ATTR, Placement

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)



@SETTINGS
@given(models(), st.booleans())
def test_forward_and_gradients_match_stock(model, exact):
    gen = torch.Generator().manual_seed(model["seed"])
    stock, hot_cold = build(model, gen)
    assert_weights_equal(stock, hot_cold)
    kjt = random_kjt(model, gen, exact)
    want, got = stock(kjt), hot_cold(kjt)
    assert got.keys() == want.keys()
    assert got.length_per_key() == want.length_per_key()
    torch.testing.assert_close(got.values(), want.values(), atol=1e-6, rtol=0)

    shape = want.values().shape
    r = dyadic(shape, gen) if exact else torch.randn(shape, generator=gen)
    (want.values() * r).sum().backward()
    (got.values() * r).sum().backward()
    grads = hot_cold.logical_grads()
    for name, w in stock_weights(stock).items():
        if exact:
            assert torch.equal(grads[name], w.grad), name
        else:
            torch.testing.assert_close(grads[name], w.grad, atol=1e-6, rtol=0)


def _gamma(n: int) -> float:
    """Higham's gamma_n for float32: n rounding errors compound to at most this (relative)."""
    u = 2.0**-24
    return n * u / (1 - n * u)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(models())
def test_mixed_bags_are_within_the_stated_rounding_bound(model):
    """The README's bound: a pooled value of a bag of L ids differs from stock's by at most
    2 * gamma_{L+1} * sum_i |c_i| (c_i = w_i e_i, / L for MEAN): both are float32 sums of the
    same L products (and a 1/L scale), in different orders, each within gamma_{L+1} of exact."""
    gen = torch.Generator().manual_seed(model["seed"])
    stock, hot_cold = build(model, gen)
    kjt = random_kjt(model, gen)
    want, got = stock(kjt).to_dict(), hot_cold(kjt).to_dict()
    weights = {t.name: w.detach().double() for t, w in zip(
        model["tables"], stock_weights(stock).values(), strict=True)}
    for t in model["tables"]:
        for f in t.feature_names:
            jt = kjt[f]
            for b, (ids, w) in enumerate(zip(
                    jt.to_dense(), jt.to_dense_weights() or [None] * len(jt.lengths()),
                    strict=True)):
                length = ids.numel()
                rows = weights[t.name][ids]
                if w is not None:
                    rows = rows * w.double()[:, None]
                if t.pooling == PoolingType.MEAN and length:
                    rows = rows / length
                bound = 2 * _gamma(length + 1) * rows.abs().sum(0)
                diff = (got[f][b].double() - want[f][b].double()).abs()
                assert bool((diff <= bound).all()), (f, b, diff, bound)


@SETTINGS
@given(models())
def test_sgd_steps_bit_identical(model):
    gen = torch.Generator().manual_seed(model["seed"])
    stock, hot_cold = build(model, gen)
    opts = [torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.5) for m in (stock, hot_cold)]
    for _ in range(3):
        kjt = random_kjt(model, gen, exact=True)
        r = dyadic(stock(kjt).values().shape, gen)
        for m, opt in zip((stock, hot_cold), opts, strict=True):
            opt.zero_grad()
            (m(kjt).values() * r).sum().backward()
            opt.step()
    assert_weights_equal(stock, hot_cold, exact=True)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(models())
def test_nonlinear_loss_training_within_tolerance(model):
    gen = torch.Generator().manual_seed(model["seed"])
    stock, hot_cold = build(model, gen)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (stock, hot_cold)]
    for _ in range(3):
        kjt = random_kjt(model, gen)
        for m, opt in zip((stock, hot_cold), opts, strict=True):
            opt.zero_grad()
            m(kjt).values().pow(2).sum().backward()
            opt.step()
    assert_weights_equal(stock, hot_cold, exact=False)


@pytest.mark.parametrize(
    "optimizer, kwargs",
    [
        (torch.optim.SGD, {"lr": 0.3}),
        (torch.optim.Adagrad, {"lr": 0.3}),
        (RowWiseAdagrad, {"lr": 0.3}),
    ],
)
def test_optimizer_in_backward_bit_identical(optimizer, kwargs):
    """TorchRec's apply_optimizer_in_backward works on the unsharded modules on CPU. Optimizer
    state is per element (Adagrad) or per row (row-wise Adagrad), so the split keeps it exact."""
    model = {
        "tables": [
            EmbeddingBagConfig(
                name="t0", num_embeddings=40, embedding_dim=4, feature_names=["a", "b"]
            ),
            EmbeddingBagConfig(
                name="t1",
                num_embeddings=9,
                embedding_dim=3,
                feature_names=["c"],
                pooling=PoolingType.MEAN,
            ),
        ],
        "hot_rows": {"t0": 7, "t1": 3},
        "weighted": False,
        "batch": 8,
        "max_len": 4,
    }
    gen = torch.Generator().manual_seed(1)
    stock, hot_cold = build(model, gen)
    for m in (stock, hot_cold):
        apply_optimizer_in_backward(optimizer, m.parameters(), kwargs)
    for _ in range(4):
        kjt = random_kjt(model, gen, exact=True)
        r = dyadic(stock(kjt).values().shape, gen)
        for m in (stock, hot_cold):
            (m(kjt).values() * r).sum().backward()
    assert_weights_equal(stock, hot_cold, exact=True)


def test_variable_batch_per_feature_matches_stock():
    tables = [
        EmbeddingBagConfig(name="t0", num_embeddings=30, embedding_dim=4, feature_names=["a", "b"]),
        EmbeddingBagConfig(
            name="t1",
            num_embeddings=6,
            embedding_dim=2,
            feature_names=["c"],
            pooling=PoolingType.MEAN,
        ),
    ]
    gen = torch.Generator().manual_seed(3)
    stock, hot_cold = build(
        {"tables": tables, "hot_rows": {"t0": 5, "t1": 2}, "weighted": False}, gen
    )
    strides = {"a": 3, "b": 1, "c": 4}
    lengths = torch.tensor([0, 1, 2, 4])[
        torch.randint(0, 4, (sum(strides.values()),), generator=gen)
    ]
    sizes = [int(s.sum()) for s in lengths.split(list(strides.values()))]
    values = torch.cat(
        [torch.randint(0, n, (k,), generator=gen) for n, k in zip((30, 30, 6), sizes, strict=True)]
    )
    inverse = torch.stack([torch.randint(0, s, (5,), generator=gen) for s in strides.values()])
    kjt = KeyedJaggedTensor(
        keys=list(strides),
        values=values,
        lengths=lengths,
        stride_per_key_per_rank=[[s] for s in strides.values()],
        inverse_indices=(list(strides), inverse),
    )
    want, got = stock(kjt), hot_cold(kjt)
    assert got.values().shape == want.values().shape == (5, 10)
    torch.testing.assert_close(got.values(), want.values(), atol=1e-6, rtol=0)
    r = dyadic((5, 10), gen)  # exact data: see module docstring
    (want.values() * r).sum().backward()
    (got.values() * r).sum().backward()
    for name, g in hot_cold.logical_grads().items():
        assert torch.equal(g, stock.embedding_bags[name].weight.grad)


def test_weighted_mean_pools_weighted_sum_over_length():
    """The stock unsharded EBC rejects weighted MEAN; here it pools sum(w * e) / L."""
    table = EmbeddingBagConfig(
        name="t", num_embeddings=10, embedding_dim=2, feature_names=["f"], pooling=PoolingType.MEAN
    )
    hot_cold = HotColdEmbeddingBagCollection([table], {"t": [2, 5]}, is_weighted=True)
    kjt = KeyedJaggedTensor(
        keys=["f"],
        values=torch.tensor([2, 3, 5, 9]),
        lengths=torch.tensor([3, 0, 1]),
        weights=torch.tensor([0.5, 2.0, 1.0, 3.0]),
    )
    w = hot_cold.logical_weights()["t"]
    want = torch.stack([(0.5 * w[2] + 2.0 * w[3] + w[5]) / 3, torch.zeros(2), 3.0 * w[9]])
    torch.testing.assert_close(hot_cold(kjt).values(), want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", [-3, 12])
def test_out_of_range_id_raises_naming_feature_and_value(bad):
    table = EmbeddingBagConfig(
        name="t", num_embeddings=12, embedding_dim=2, feature_names=["f", "g"]
    )
    hot_cold = HotColdEmbeddingBagCollection([table], {"t": [1, 4]})
    kjt = KeyedJaggedTensor(
        keys=["f", "g"], values=torch.tensor([1, 4, 0, bad]), lengths=torch.tensor([2, 0, 1, 1])
    )
    message = rf"feature 'g' \(table 't', 12 rows\) has id {bad}, outside \[0, 12\)"
    with pytest.raises(ValueError, match=message):
        hot_cold(kjt)


def two_tables():
    return [
        EmbeddingBagConfig(name="t0", num_embeddings=20, embedding_dim=4, feature_names=["a"]),
        EmbeddingBagConfig(name="t1", num_embeddings=8, embedding_dim=2, feature_names=["b", "c"]),
        EmbeddingBagConfig(name="t2", num_embeddings=5, embedding_dim=3, feature_names=["d"]),
    ]


def test_state_dict_round_trips_with_stock():
    hot_ids = {"t0": torch.tensor([0, 7, 19]), "t1": torch.arange(8)}  # split, all hot, all cold
    stock = EmbeddingBagCollection(two_tables())
    hot_cold = HotColdEmbeddingBagCollection(two_tables(), hot_ids)
    assert hot_cold.placements() == {
        "t0": Placement.SPLIT,
        "t1": Placement.HBM,
        "t2": Placement.UVM,
    }
    want = {k: tuple(v.shape) for k, v in stock.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in hot_cold.state_dict().items()} == want
    assert list(hot_cold.state_dict()) == list(want)

    # stock -> hot/cold
    hot_cold.load_state_dict(stock.state_dict())
    for name, w in hot_cold.logical_weights().items():
        assert torch.equal(w, stock.embedding_bags[name].weight.detach())
    # hot/cold -> stock
    with torch.no_grad():
        for p in hot_cold.parameters():
            p.uniform_()
    stock.load_state_dict(hot_cold.state_dict())
    for name, w in hot_cold.logical_weights().items():
        assert torch.equal(w, stock.embedding_bags[name].weight.detach())
    # nested under a parent module, with the parent's prefix
    parent_a, parent_b = torch.nn.Sequential(stock), torch.nn.Sequential(hot_cold)
    with torch.no_grad():
        for p in stock.parameters():
            p.normal_()
    parent_b.load_state_dict(parent_a.state_dict())
    assert torch.equal(hot_cold.logical_weights()["t0"], stock.embedding_bags["t0"].weight)


def test_state_dict_rejects_wrong_shape():
    hot_cold = HotColdEmbeddingBagCollection(two_tables(), {"t0": [3, 4]})
    state = hot_cold.state_dict()
    state["embedding_bags.t0.weight"] = torch.zeros(19, 4)
    with pytest.raises(RuntimeError, match="size mismatch for embedding_bags.t0.weight"):
        hot_cold.load_state_dict(state)


def test_from_ebc_copies_weights_and_keeps_logical_view():
    stock = EmbeddingBagCollection(two_tables(), is_weighted=True)
    hot_cold = HotColdEmbeddingBagCollection.from_ebc(stock, {"t0": [1, 2, 3], "t2": [0]})
    assert hot_cold.is_weighted()
    assert [t.name for t in hot_cold.embedding_bag_configs()] == ["t0", "t1", "t2"]
    inner = getattr(hot_cold, SPLIT_MODULE_ATTR)
    assert [t.name for t in inner.embedding_bag_configs()] == [
        "t0__hot",
        "t0__cold",
        "t1",
        "t2__hot",
        "t2__cold",
    ]
    assert not any("hot_ids" in k or "_hot_merged" in k for k in hot_cold.state_dict())
    for name, w in hot_cold.logical_weights().items():
        assert torch.equal(w, stock.embedding_bags[name].weight.detach())
    assert torch.equal(hot_cold.hot_ids("t0"), torch.tensor([1, 2, 3]))


def test_shared_feature_across_tables():
    tables = [
        EmbeddingBagConfig(name="t0", num_embeddings=6, embedding_dim=2, feature_names=["f"]),
        EmbeddingBagConfig(name="t1", num_embeddings=4, embedding_dim=3, feature_names=["f"]),
    ]
    stock = EmbeddingBagCollection(tables)
    hot_cold = HotColdEmbeddingBagCollection.from_ebc(stock, {"t1": torch.arange(4)})
    kjt = KeyedJaggedTensor(
        keys=["f"], values=torch.tensor([0, 3, 2]), lengths=torch.tensor([2, 1])
    )
    want, got = stock(kjt), hot_cold(kjt)
    assert got.keys() == want.keys() == ["f@t0", "f@t1"]
    torch.testing.assert_close(got.values(), want.values(), atol=1e-6, rtol=0)
    with pytest.raises(NotImplementedError, match="shared by tables"):
        HotColdEmbeddingBagCollection(tables, {"t0": [1]})


@pytest.mark.parametrize(
    "ids, message",
    [([3, 1], "sorted and unique"), ([1, 1], "sorted and unique"), ([0, 20], r"\[0, 20\)")],
)
def test_bad_hot_ids_rejected(ids, message):
    with pytest.raises(ValueError, match=message):
        HotColdEmbeddingBagCollection(two_tables(), {"t0": ids})


@SETTINGS
@given(models())
def test_unsharded_lookup_path_is_bit_identical_to_calling_the_inner_collection(model):
    """Unsharded, the module calls the inner tables itself (no 2x wide concatenation) and adds
    cold into hot in place; outputs and gradients equal those of the inner module's forward."""
    gen = torch.Generator().manual_seed(model["seed"])
    _, hot_cold = build(model, gen)
    kjt = random_kjt(model, gen)
    got = hot_cold(kjt)
    pooled = hot_cold.split_module(hot_cold.remap(kjt)).to_dict()

    def logical(key: str) -> torch.Tensor:
        hot, cold = key + HOT_SUFFIX, key + COLD_SUFFIX
        return pooled[hot] + pooled[cold] if hot in pooled else pooled[key]

    want = torch.cat([logical(k) for k in got.keys()], dim=1)
    assert torch.equal(got.values(), want)
    r = torch.randn(want.shape, generator=gen)
    grads = []
    for values in (got.values(), want):
        (values * r).sum().backward()
        grads.append({n: w.grad.clone() for n, w in hot_cold.split_module.named_parameters()})
        hot_cold.zero_grad(set_to_none=True)
    for name, g in grads[0].items():
        assert torch.equal(g, grads[1][name]), name


class _Opaque(torch.nn.Module):
    """Hides the inner EBC's type, so the module merges its KeyedTensor as it does sharded."""

    def __init__(self, inner: EmbeddingBagCollection) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, kjt: KeyedJaggedTensor):  # type: ignore[no-untyped-def]
        return self.inner(kjt)


@pytest.mark.parametrize("dims", [(4, 4, 4), (4, 2, 4)])
def test_merge_of_a_keyed_tensor_is_bit_identical(dims):
    """The merge used for sharded inner modules (one embedding_bag pass when all dims are equal,
    slices + add + cat otherwise) gives the unsharded path's outputs and gradients."""
    tables = [
        EmbeddingBagConfig(name=f"t{i}", num_embeddings=n, embedding_dim=d, feature_names=fs)
        for i, (n, d, fs) in enumerate(
            zip((30, 9, 12), dims, (["a", "b"], ["c"], ["d"]), strict=True)
        )
    ]
    model = {"tables": tables, "hot_rows": {"t0": 6, "t1": 3, "t2": 0}, "weighted": False}
    gen = torch.Generator().manual_seed(5)
    _, hot_cold = build({**model, "batch": 7, "max_len": 3}, gen)
    kjt = random_kjt({**model, "batch": 7, "max_len": 3}, gen)
    inner, results = hot_cold.split_module, []
    for opaque in (False, True):
        if opaque:
            setattr(hot_cold, SPLIT_MODULE_ATTR, _Opaque(inner))
        out = hot_cold(kjt)
        r = dyadic(out.values().shape, gen) if not results else results[0][1]
        (out.values() * r).sum().backward()
        results.append((out.values().detach(), r, {n: w.grad for n, w in inner.named_parameters()}))
        hot_cold.zero_grad(set_to_none=True)
    (want, _, want_grads), (got, _, got_grads) = results
    assert torch.equal(got, want)
    for name, g in want_grads.items():
        assert torch.equal(got_grads[name], g), name
