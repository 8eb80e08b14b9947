"""HotColdEmbeddingCollection against a stock EmbeddingCollection holding the same weights:
per-id embeddings, gradients and SGD / row-wise Adagrad updates bit-identical (nothing is
pooled), state dicts interchangeable, bad input refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import EmbeddingCollection, EmbeddingConfig, KeyedJaggedTensor
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from torchrec_hot import HotColdEmbeddingCollection
from torchrec_hot.tables.split import Placement

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)


@st.composite
def _cases(draw):
    dim = draw(st.sampled_from([1, 4, 8]))  # one dim: TorchRec's EC shards tables of one dim
    tables, hot_rows = [], {}
    for t in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 40))
        tables.append(EmbeddingConfig(
            name=f"t{t}", num_embeddings=n, embedding_dim=dim,
            feature_names=[f"t{t}_f{i}" for i in range(draw(st.integers(1, 2)))]))
        hot_rows[f"t{t}"] = draw(st.sampled_from([0, n, draw(st.integers(0, n))]))
    return tables, hot_rows, draw(st.integers(1, 5)), draw(st.integers(0, 2**31 - 1))


def _build(tables, hot_rows, gen):
    hot_ids = {t.name: torch.randperm(t.num_embeddings, generator=gen)[: hot_rows[t.name]]
               .sort().values for t in tables}
    hot_cold = HotColdEmbeddingCollection(tables, hot_ids)
    stock = EmbeddingCollection(tables=tables)
    stock.load_state_dict(hot_cold.state_dict())
    return stock, hot_cold


def _kjt(tables, batch: int, gen) -> KeyedJaggedTensor:
    keys, lengths, values = [], [], []
    for t in tables:
        for f in t.feature_names:
            lens = torch.randint(0, 5, (batch,), generator=gen)
            keys.append(f)
            lengths.append(lens)
            values.append(torch.randint(0, t.num_embeddings, (int(lens.sum()),), generator=gen))
    return KeyedJaggedTensor(keys=keys, values=torch.cat(values), lengths=torch.cat(lengths))


@SETTINGS
@given(_cases())
def test_embeddings_and_gradients_are_bit_identical(case):
    tables, hot_rows, batch, seed = case
    gen = torch.Generator().manual_seed(seed)
    stock, hot_cold = _build(tables, hot_rows, gen)
    kjt = _kjt(tables, batch, gen)
    want, got = stock(kjt), hot_cold(kjt)
    assert list(got) == list(want)
    for f in want:
        assert torch.equal(got[f].values(), want[f].values()), f
        assert torch.equal(got[f].lengths(), want[f].lengths()), f
    loss_want = sum((jt.values() * (i + 1.5)).sum() for i, jt in enumerate(want.values()))
    loss_got = sum((jt.values() * (i + 1.5)).sum() for i, jt in enumerate(got.values()))
    loss_want.backward()
    loss_got.backward()
    grads = hot_cold.logical_grads()
    for name, module in stock.embeddings.items():
        g = grads[name]
        assert (g is None) == (module.weight.grad is None), name
        assert g is None or torch.equal(g, module.weight.grad), name


@SETTINGS
@given(_cases())
def test_fused_rowwise_adagrad_steps_bit_identical(case):
    tables, hot_rows, batch, seed = case
    gen = torch.Generator().manual_seed(seed)
    stock, hot_cold = _build(tables, hot_rows, gen)
    for m in (stock, hot_cold):
        apply_optimizer_in_backward(RowWiseAdagrad, m.parameters(), {"lr": 0.1})
    for _ in range(3):
        kjt = _kjt(tables, batch, gen)
        for m in (stock, hot_cold):
            out = m(kjt)
            sum((jt.values() ** 2).sum() for jt in out.values()).backward()
    merged = hot_cold.logical_weights()
    for name, module in stock.embeddings.items():
        assert torch.equal(merged[name], module.weight.detach()), name


def test_state_dict_is_the_stock_layout_and_bad_ids_are_refused():
    tables = [EmbeddingConfig(name="a", num_embeddings=10, embedding_dim=4, feature_names=["f"]),
              EmbeddingConfig(name="b", num_embeddings=6, embedding_dim=4, feature_names=["g"])]
    hot_cold = HotColdEmbeddingCollection(tables, {"a": torch.tensor([2, 7]), "b": torch.arange(6)})
    assert hot_cold.placements() == {"a": Placement.SPLIT, "b": Placement.HBM}
    assert set(hot_cold.state_dict()) == {"embeddings.a.weight", "embeddings.b.weight"}
    stock = EmbeddingCollection(tables=tables)
    hot_cold.load_state_dict(stock.state_dict())
    assert torch.equal(hot_cold.logical_weights()["a"], stock.embeddings["a"].weight.detach())
    twin = HotColdEmbeddingCollection.from_ec(stock, {"a": torch.tensor([0, 9])})
    assert torch.equal(twin.state_dict()["embeddings.a.weight"], stock.embeddings["a"].weight)
    bad = KeyedJaggedTensor(keys=["f", "g"], values=torch.tensor([1, 10, 0]),
                            lengths=torch.tensor([2, 1]))
    with pytest.raises(ValueError, match="feature 'f'.*10"):
        hot_cold(bad)
