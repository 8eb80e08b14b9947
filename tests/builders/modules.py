"""Hypothesis strategies and builders for the hot/cold module against stock TorchRec: random
models, dyadic weights (exact sums), KJTs, a stock/hot-cold pair and weight checks."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    KeyedJaggedTensor,
    PoolingType,
)

from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection


@st.composite
def models(draw):
    """Logical tables (some MEAN, several features per table), hot-row counts 0..N, a batch."""
    weighted = draw(st.booleans())  # the stock unsharded EBC rejects weighted MEAN
    tables, hot_rows = [], {}
    for t in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 30))
        pooling = PoolingType.SUM if weighted else draw(st.sampled_from(list(PoolingType)[:2]))
        tables.append(
            EmbeddingBagConfig(
                name=f"t{t}",
                num_embeddings=n,
                embedding_dim=draw(st.sampled_from([1, 3, 8])),
                feature_names=[f"t{t}_f{i}" for i in range(draw(st.integers(1, 3)))],
                pooling=pooling,
            )
        )
        hot_rows[f"t{t}"] = draw(st.sampled_from([0, n, draw(st.integers(0, n))]))
    return {
        "tables": tables,
        "hot_rows": hot_rows,
        "weighted": weighted,
        "batch": draw(st.integers(1, 6)),
        "max_len": draw(st.integers(0, 5)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def dyadic(shape, gen: torch.Generator, low: int = -64, high: int = 64, scale: float = 8.0):
    """Random multiples of 1 / scale: float32 sums of a few dozen of them are exact."""
    return torch.randint(low, high + 1, shape, generator=gen).float() / scale


def random_kjt(model, gen: torch.Generator, exact: bool = False) -> KeyedJaggedTensor:
    """Random bags; with `exact`, dyadic weights and bag lengths in {0, 1, 2, 4}."""
    keys, lengths, values = [], [], []
    for t in model["tables"]:
        for f in t.feature_names:
            lens = torch.randint(0, model["max_len"] + 1, (model["batch"],), generator=gen)
            if exact:
                lens = torch.tensor([0, 1, 2, 4])[lens % 4]
            keys.append(f)
            lengths.append(lens)
            values.append(torch.randint(0, t.num_embeddings, (int(lens.sum()),), generator=gen))
    vals = torch.cat(values)
    weights = None
    if model["weighted"]:
        n = vals.numel()
        weights = dyadic((n,), gen, 1, 8, 4.0) if exact else torch.rand(n, generator=gen)
    return KeyedJaggedTensor(keys=keys, values=vals, lengths=torch.cat(lengths), weights=weights)


def build(model, gen: torch.Generator):
    """(stock EBC, hot/cold module) with equal logical weights; the stock EBC gets them through
    the hot/cold module's logical state dict."""
    hot_ids = {}
    for t in model["tables"]:
        rows = torch.randperm(t.num_embeddings, generator=gen)[: model["hot_rows"][t.name]]
        hot_ids[t.name] = rows.sort().values
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    hot_cold = HotColdEmbeddingBagCollection(
        model["tables"], hot_ids, is_weighted=model["weighted"]
    )
    stock = EmbeddingBagCollection(model["tables"], is_weighted=model["weighted"])
    stock.load_state_dict(hot_cold.state_dict())
    return stock, hot_cold


def stock_weights(stock: EmbeddingBagCollection) -> dict[str, torch.Tensor]:
    return {name: bag.weight for name, bag in stock.embedding_bags.items()}


def assert_weights_equal(stock, hot_cold, exact: bool = True) -> None:
    merged = hot_cold.logical_weights()
    for name, w in stock_weights(stock).items():
        if exact:
            assert torch.equal(merged[name], w.detach()), name
        else:
            torch.testing.assert_close(merged[name], w.detach(), atol=1e-6, rtol=0)
