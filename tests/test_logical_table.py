"""LogicalTable, the one split/merge codec, against a plain reference: hot rows in hot-slot
order, cold rows in ascending id order, for weights (rows, D) and row-wise state (rows * k,)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from torchrec_hot.tables.rows import LogicalTable, is_weight_key, table_of_key

PROPS = settings(max_examples=50, deadline=None, derandomize=True)


@st.composite
def _tables(draw):
    n = draw(st.integers(2, 40))
    hot = sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1)))
    return LogicalTable("t", n, draw(st.integers(1, 5)), torch.tensor(hot, dtype=torch.int64))


@PROPS
@given(_tables(), st.integers(1, 3))
def test_split_and_merge_against_a_reference(table, k):
    n, d = table.num_embeddings, table.embedding_dim
    hot = table.hot_ids.tolist()
    cold = [i for i in range(n) if i not in set(hot)]
    weights = torch.randn(n, d)
    parts = table.split(weights)
    assert torch.equal(parts[0], weights[hot]) and torch.equal(parts[1], weights[cold])
    assert torch.equal(table.merge(parts), weights)
    assert [p.tolist() for p in table.part_ids()] == [hot, cold]
    # row-wise state of k column shards: k blocks of n entries, each split like the rows
    state = torch.randn(k * n)
    blocks = state.view(k, n)
    hot_state, cold_state = table.split(state)
    assert torch.equal(hot_state, blocks[:, hot].reshape(-1))
    assert torch.equal(cold_state, blocks[:, cold].reshape(-1))
    assert torch.equal(table.merge([hot_state, cold_state]), state)


def test_keys_and_unsplit_tables():
    whole = LogicalTable("w", 5, 2)
    assert whole.parts() == ["w"]
    assert whole.part_keys("m.") == ["m.split_ebc.embedding_bags.w.weight"]
    full = torch.randn(5, 2)
    assert whole.split(full)[0] is full and whole.merge([full]) is full
    split = LogicalTable("s", 5, 2, torch.tensor([1, 3]))
    assert split.key("a.b.") == "a.b.embedding_bags.s.weight"
    assert split.part_keys("") == ["split_ebc.embedding_bags.s__hot.weight",
                                   "split_ebc.embedding_bags.s__cold.weight"]
    assert table_of_key("a.b.embedding_bags.s__hot.weight") == ("a.b.embedding_bags.", "s__hot")
    assert table_of_key("x.embeddings.t.weight") == ("x.embeddings.", "t")
    seq = LogicalTable("q", 5, 2, torch.tensor([1, 3]), pooled=False)
    assert seq.key("m.") == "m.embeddings.q.weight"
    assert seq.part_keys("m.") == ["m.split_ec.embeddings.q__hot.weight",
                                   "m.split_ec.embeddings.q__cold.weight"]
    assert is_weight_key("x.embedding_bags.t.weight") and not is_weight_key("x.linear.weight")


def test_halves_sharded_differently_are_refused():
    table = LogicalTable("t", 6, 2, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="sharded differently"):
        table.merge([torch.zeros(4), torch.zeros(4)])  # 2 column blocks of hot, 1 of cold
