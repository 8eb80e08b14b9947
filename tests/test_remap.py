"""KJT remap (logical features -> hot/cold split features) against a per-feature reference.

The reference splits each feature on its own with `torch.ops.fbgemm.masked_select_jagged_1d` and
maps ids with numpy (`isin` / `searchsorted` into the explicit cold id list), so it shares no code
with the vectorised all-features remap under test. Comparisons are exact.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchrec import KeyedJaggedTensor

from tests.builders.remap import (
    CPU_PATHS,
    assert_matches,
    layouts,
    make_remapper,
    random_hot_ids,
    random_kjt,
    reference,
)
from torchrec_hot.sharding.remap.remapper import KJTRemapper, remap_kjt, validate_ids
from torchrec_hot.sharding.remap.vectorised import remap_vectorised, rows_and_keys
from torchrec_hot.tables.rows import merge_rows, split_rows
from torchrec_hot.tables.split import COLD_SUFFIX, HOT_SUFFIX

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)



@SETTINGS
@given(layouts(), st.sampled_from(sorted(CPU_PATHS)))
def test_remap_matches_per_feature_reference(layout, path):
    """Every path (CPU batched / per feature through code tables, searchsorted as on
    accelerators) gives the reference."""
    gen = torch.Generator().manual_seed(layout["seed"])
    hot = random_hot_ids(layout, gen)
    kjt = random_kjt(layout, gen)
    out = make_remapper(layout, hot, path=path)(kjt, validate=True)
    assert out.stride() == kjt.stride()
    assert out.values().numel() == kjt.values().numel()
    assert_matches(out, reference(kjt, layout, hot))


@SETTINGS
@given(layouts())
def test_remap_variable_batch_per_feature(layout):
    """VBE: each feature has its own batch size; strides and inverse indices follow each half."""
    gen = torch.Generator().manual_seed(layout["seed"])
    hot = random_hot_ids(layout, gen)
    features = [f for _, _, _, fs in layout["tables"] for f in fs]
    strides = {f: int(torch.randint(1, 5, (1,), generator=gen)) for f in features}
    kjt = random_kjt(layout, gen, strides)
    full_batch = 5
    inverse = torch.stack(
        [torch.randint(0, strides[k], (full_batch,), generator=gen) for k in kjt.keys()]
    )
    kjt = KeyedJaggedTensor(
        keys=kjt.keys(),
        values=kjt.values(),
        lengths=kjt.lengths(),
        weights=kjt.weights_or_none(),
        stride_per_key_per_rank=kjt.stride_per_key_per_rank(),
        inverse_indices=(kjt.keys(), inverse),
    )
    out = make_remapper(layout, hot)(kjt)
    expected = reference(kjt, layout, hot)
    assert_matches(out, expected)
    source = {k + s: k for k in kjt.keys() for s in ("", HOT_SUFFIX, COLD_SUFFIX)}
    assert out.variable_stride_per_key()
    assert out.stride_per_key() == [strides[source[k]] for k in out.keys()]
    inv_keys, inv = out.inverse_indices()
    assert inv_keys == out.keys()
    for i, k in enumerate(out.keys()):
        assert torch.equal(inv[i], inverse[kjt.keys().index(source[k])])


@SETTINGS
@given(layouts())
def test_mean_features_get_inverse_length_weights(layout):
    gen = torch.Generator().manual_seed(layout["seed"])
    hot = random_hot_ids(layout, gen)
    kjt = random_kjt(layout, gen)
    mean = {f for _, _, _, fs in layout["tables"][:1] for f in fs}
    out = make_remapper(layout, hot, mean)(kjt)
    # expected weights: the KJT's own (or 1), times 1/L of the logical sample for MEAN features
    lengths = kjt.lengths().long()
    row = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    in_mean = torch.tensor([k in mean for k in kjt.keys()])
    per_key = torch.repeat_interleave(in_mean, torch.tensor(kjt.stride_per_key()))
    scale = torch.where(per_key[row], 1.0 / lengths[row].float(), 1.0)
    base = kjt.weights() if layout["weighted"] else torch.ones(kjt.values().numel())
    weighted = KeyedJaggedTensor(
        keys=kjt.keys(), values=kjt.values(), lengths=kjt.lengths(), weights=base * scale
    )
    assert_matches(out, reference(weighted, layout, hot))


def test_no_split_feature_passes_through():
    kjt = KeyedJaggedTensor(keys=["a"], values=torch.tensor([1, 2]), lengths=torch.tensor([2, 0]))
    remapper = KJTRemapper({"a": "A"}, {"A": 3}, {})
    assert remapper(kjt) is kjt


def test_remap_kjt_small_example():
    #          b=0      b=1   b=2
    # a:     [1, 5]     []   [3, 9]     hot ids of a: [3, 5]  (N = 10)
    # b:       [0]    [2, 7]   []       not split
    kjt = KeyedJaggedTensor(
        keys=["a", "b"],
        values=torch.tensor([1, 5, 3, 9, 0, 2, 7]),
        lengths=torch.tensor([2, 0, 2, 1, 2, 0]),
        weights=torch.arange(7.0),
    )
    out = remap_kjt(kjt, {"a": torch.tensor([3, 5])}, {"a": 10, "b": 10})
    assert out.keys() == ["a__hot", "a__cold", "b"]
    assert out.lengths().tolist() == [1, 0, 1, 1, 0, 1, 1, 2, 0]
    assert out.values().tolist() == [1, 0, 1, 7, 0, 2, 7]  # 5->slot 1, 3->slot 0; 1->1, 9->7
    assert out.weights().tolist() == [1.0, 2.0, 0.0, 3.0, 4.0, 5.0, 6.0]


@pytest.mark.parametrize("bad", [-1, 10, 1 << 40])
def test_validate_names_feature_table_and_value(bad):
    kjt = KeyedJaggedTensor(
        keys=["a", "b"], values=torch.tensor([1, 2, bad, 3]), lengths=torch.tensor([2, 0, 1, 1])
    )
    message = rf"feature 'b' \(table 'T', 10 rows\) has id {bad}, outside \[0, 10\)"
    with pytest.raises(ValueError, match=message):
        validate_ids(kjt, {"T": 10}, {"a": "T", "b": "T"})
    validate_ids(kjt, {"T": 10}, {"a": "T"})  # unknown features are not checked


def test_split_and_merge_rows_round_trip():
    gen = torch.Generator().manual_seed(0)
    full = torch.randn(9, 3, generator=gen)
    hot_ids = torch.tensor([0, 4, 8])
    hot, cold = split_rows(full, hot_ids)
    assert torch.equal(hot, full[hot_ids])
    assert torch.equal(cold, full[torch.tensor([1, 2, 3, 5, 6, 7])])
    assert torch.equal(merge_rows(hot, cold, hot_ids), full)


@SETTINGS
@given(layouts(), st.booleans(), st.sampled_from(["cpu batched", "cpu per feature"]))
def test_cpu_and_vectorised_paths_give_identical_kjts(layout, mean, path):
    """Each CPU path and the vectorised path (accelerators) agree bit for bit, dtypes
    included; the vectorised path gives the same with the row/key tensors validation made."""
    gen = torch.Generator().manual_seed(layout["seed"])
    hot = random_hot_ids(layout, gen)
    kjt = random_kjt(layout, gen)
    means = {f for _, _, _, fs in layout["tables"][:1] for f in fs} if mean else ()
    cpu = make_remapper(layout, hot, means, path=path)(kjt)
    vectorised = make_remapper(layout, hot, means, path="vectorised")
    vec = vectorised(kjt)
    plan = vectorised._layout(kjt)
    reused = remap_vectorised(kjt, plan, vectorised._hot_merged, rows_and_keys(kjt, plan))
    for other in (cpu, reused):
        assert other.keys() == vec.keys()
        for got, want in ((other.values(), vec.values()), (other.lengths(), vec.lengths())):
            assert got.dtype == want.dtype and torch.equal(got, want)
        assert (other.weights_or_none() is None) == (vec.weights_or_none() is None)
        if vec.weights_or_none() is not None:
            assert torch.equal(other.weights(), vec.weights())


@pytest.mark.parametrize("path", ["cpu batched", "cpu per feature"])
def test_set_hot_ids_rebuilds_the_cpu_code_table(path):
    values, lengths = torch.tensor([1, 3, 5, 9, 2, 0]), torch.tensor([4, 2])
    kjt = KeyedJaggedTensor(keys=["a", "b"], values=values, lengths=lengths)
    remapper = KJTRemapper({"a": "A", "b": "B"}, {"A": 10, "B": 4},
                           {"A": torch.tensor([3, 5]), "B": torch.tensor([2])}, **CPU_PATHS[path])
    assert remapper(kjt).values().tolist() == [0, 1, 1, 7, 0, 0]  # a: hot 3, 5; cold 1, 9
    remapper.set_hot_ids("A", torch.tensor([1, 9]))
    assert remapper(kjt).values().tolist() == [0, 1, 2, 4, 0, 0]  # a: hot 1, 9; cold 3, 5
    remapper.set_hot_ids("B", torch.tensor([0]))
    assert remapper(kjt).values().tolist() == [0, 1, 2, 4, 0, 1]  # b: hot 0 -> 0; cold 2 -> 1


@pytest.mark.parametrize("path", ["cpu batched", "cpu per feature", "vectorised"])
@pytest.mark.parametrize("bad", [-1, 10, 1 << 40])
def test_remap_with_validation_names_the_first_bad_feature(path, bad):
    """Validation inside the remap: the first key (in key order) with a bad id is named, and
    unknown features pass unchecked."""
    kjt = KeyedJaggedTensor(
        keys=["u", "a", "b"], values=torch.tensor([99, 1, 2, 3, 4, bad]),
        lengths=torch.tensor([1, 0, 2, 0, 1, 1, 1, 0, 0]),
    )  # fmt: skip
    remapper = KJTRemapper({"a": "T", "b": "T"}, {"T": 10}, {"T": torch.tensor([2])},
                           **CPU_PATHS[path])  # fmt: skip
    message = rf"feature 'b' \(table 'T', \d+ rows\) has id {bad}, outside"
    with pytest.raises(ValueError, match=message):
        remapper(kjt, validate=True)


@SETTINGS
@given(layouts(), st.sampled_from(["cpu batched", "vectorised"]))
def test_is_hot_matches_membership_in_the_hot_ids(layout, path):
    gen = torch.Generator().manual_seed(layout["seed"])
    hot = random_hot_ids(layout, gen)
    remapper = make_remapper(layout, hot, path=path)
    for name, n, _, _ in layout["tables"]:
        if name not in remapper.split_tables():
            continue
        ids = torch.randint(0, n, (50,), generator=gen)
        want = torch.isin(ids, hot[name])
        assert torch.equal(remapper.is_hot(name, ids), want)
