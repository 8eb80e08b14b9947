"""Profiles of whole models: every table of every embedding module (TorchRec's own test model,
unweighted + weighted EBCs; an EBC beside an EmbeddingCollection), fed each batch's KJTs
together, against a plain count of the ids."""

import numpy as np
import pytest
import torch
from torch import nn
from torchrec import (
    EmbeddingBagCollection,
    EmbeddingBagConfig,
    EmbeddingCollection,
    EmbeddingConfig,
    KeyedJaggedTensor,
)
from torchrec.distributed.test_utils import test_model as tm

from torchrec_hot import PopularityProfile
from torchrec_hot.tables.modules import embedding_modules

META = torch.device("meta")


def _sparse_nn_tables(rng: np.random.Generator):
    tables = [EmbeddingBagConfig(name=f"table_{i}", num_embeddings=int(rng.integers(20, 200)),
                                 embedding_dim=8, feature_names=[f"feature_{i}"])
              for i in range(3)]
    weighted = [EmbeddingBagConfig(name=f"weighted_table_{i}",
                                   num_embeddings=int(rng.integers(20, 200)), embedding_dim=8,
                                   feature_names=[f"weighted_feature_{i}"])
                for i in range(2)]
    return tables, weighted


def test_a_whole_model_profile_counts_every_module_from_one_batch():
    seed = int(np.random.default_rng().integers(1 << 31))
    print("seed", seed)
    rng = np.random.default_rng(seed)
    tables, weighted = _sparse_nn_tables(rng)
    model = tm.TestSparseNN(tables=tables, weighted_tables=weighted, sparse_device=META)
    assert list(embedding_modules(model)) == ["sparse.ebc", "sparse.weighted_ebc"]
    profile = PopularityProfile.for_model(model)
    assert [t.name for t in profile.tables] == [t.name for t in tables + weighted]
    expected = {t.name: np.zeros(t.num_embeddings, np.int64) for t in tables + weighted}
    _, batches = tm.ModelInput.generate(batch_size=16, world_size=3, num_float_features=4,
                                     tables=tables, weighted_tables=weighted,
                                     random_seed=seed % 1000)
    for batch in batches:
        profile.update(batch)  # unweighted and weighted KJTs of one batch, as one batch
        for kjt in (batch.idlist_features, batch.idscore_features):
            for key, ids in kjt.to_dict().items():
                table = key.replace("feature", "table")
                np.add.at(expected[table], ids.values().numpy(), 1)
    assert profile.num_samples == 16 * 3 and profile.num_batches == 3
    for name, counts in expected.items():
        assert np.array_equal(profile.counts(name), counts), name


def test_ebc_beside_an_embedding_collection():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ebc = EmbeddingBagCollection(
                tables=[EmbeddingBagConfig(name="bag", num_embeddings=10, embedding_dim=4,
                                           feature_names=["a"])], device=META)
            self.ec = EmbeddingCollection(
                tables=[EmbeddingConfig(name="seq", num_embeddings=7, embedding_dim=4,
                                        feature_names=["s"])], device=META)

    profile = PopularityProfile.for_model(Model())
    a = KeyedJaggedTensor.from_lengths_sync(["a"], torch.tensor([1, 1, 9]), torch.tensor([2, 1]))
    s = KeyedJaggedTensor.from_lengths_sync(["s"], torch.tensor([6, 0, 6, 6]),
                                            torch.tensor([3, 1]))
    profile.update([a, s])
    assert profile.counts("bag").tolist() == [0, 2] + [0] * 7 + [1]
    assert profile.counts("seq").tolist() == [1, 0, 0, 0, 0, 0, 3]
    assert profile.num_samples == 2


def test_bad_whole_model_input_is_refused_and_counts_nothing():
    rng = np.random.default_rng(0)
    tables, weighted = _sparse_nn_tables(rng)
    profile = PopularityProfile.for_model(
        tm.TestSparseNN(tables=tables, weighted_tables=weighted, sparse_device=META))
    one = KeyedJaggedTensor.from_lengths_sync(["feature_0"], torch.tensor([1, 2]),
                                              torch.tensor([1, 1]))
    three = KeyedJaggedTensor.from_lengths_sync(["feature_1"], torch.tensor([1, 2, 3]),
                                                torch.tensor([1, 1, 1]))
    with pytest.raises(ValueError, match="different batch sizes"):
        profile.update([one, three])
    with pytest.raises(ValueError, match="in two KJTs"):
        profile.update([one, one])
    with pytest.raises(ValueError, match="expected a KeyedJaggedTensor"):
        profile.update(object())
    assert profile.num_samples == 0
    twice = nn.ModuleDict({
        "x": EmbeddingBagCollection(tables=tables[:1], device=META),
        "y": EmbeddingBagCollection(tables=tables[:1], device=META),
    })
    with pytest.raises(ValueError, match="'table_0' is in both 'x' and 'y'"):
        PopularityProfile.for_model(twice)
    with pytest.raises(ValueError, match="no EmbeddingBagCollection"):
        PopularityProfile.for_model(nn.Linear(2, 2))
