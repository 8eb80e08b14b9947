"""HotColdEmbeddingBagCollection: an EmbeddingBagCollection whose tables are split hot/cold.

Each logical table `T` (N rows, dim D) with 0 < H < N hot ids becomes two ordinary TorchRec tables
`T__hot` (H, D) and `T__cold` (N - H, D) (names from `split.py`), held by a stock
`EmbeddingBagCollection` under the attribute `split_ebc` (`SPLIT_MODULE_ATTR`), so that
DistributedModelParallel shards it with TorchRec's stock sharder and a plan keyed
`<module path>.split_ebc`: the plan puts `T__hot` in HBM and `T__cold` in UVM. Tables with no hot
id stay whole (all cold, UVM); tables whose every row is hot stay whole (HBM).

Outside, the module looks like a stock `EmbeddingBagCollection` of the logical tables:
`forward(kjt) -> KeyedTensor` has the logical feature keys in logical order, each (B, D) float32;
`state_dict()` / `load_state_dict()` use the stock keys and shapes
(`embedding_bags.<T>.weight`, (N, D)), so checkpoints move both ways between the two modules
(plain, unsharded module; sharded tensors are left to TorchRec's sharded state dict).

Pooling: a split feature's two halves are pooled with SUM and added. MEAN tables are built with
SUM pooling internally and each id is weighted by 1 / L, L the sample's logical length (empty bag
-> 0, as TorchRec does); per id this is the float arithmetic of the stock MEAN backward, on
TorchRec's unsharded tables and FBGEMM's CPU TBE alike (see `remap.py`). So the inner collection
is weighted when the module is weighted or has a MEAN table. Weighted MEAN (which the unsharded
stock EBC rejects) pools sum(w * e) / L with the matching gradient w / L per id; note that FBGEMM
1.8's CPU MEAN TBE gives the same forward but drops the 1 / L from its weighted backward.

Outputs are within float rounding of the stock module's: a bag with one id, or with all its ids
in one half, is bit-identical; a bag of L ids mixing hot and cold rows is summed as (hot sum) +
(cold sum) instead of in bag order, within 2 gamma_(L+1) sum_i |c_i| of stock's (c_i: each id's
weighted, MEAN-scaled row; gamma_n = n u / (1 - n u), u = 2^-24). Gradients and optimizer
updates reach exactly the rows, with exactly the scales, of the stock module (see
tests/test_hot_cold_ebc.py for what is bit-exact).

What both hot/cold modules share (placements, hot ids, the logical view and state hooks, the
id check) is `hot_cold_tables.py`; the merge of sharded outputs is in
`hot_cold_merge.py`; how rows, state and keys split and merge is `tables.rows.LogicalTable`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, KeyedTensor
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import get_embedding_names_by_table

from torchrec_hot.sharding.hot_cold_merge import PooledMerge
from torchrec_hot.sharding.hot_cold_tables import HotColdTables, HotIds
from torchrec_hot.sharding.presum import Presum, presum_sharded_ebc
from torchrec_hot.tables.split import SPLIT_MODULE_ATTR, Placement


class HotColdEmbeddingBagCollection(HotColdTables):
    """A stock-compatible EmbeddingBagCollection whose tables are split into hot and cold parts.

    Args:
        tables: the logical tables (as for `EmbeddingBagCollection`); not modified.
        hot_ids: logical table name -> sorted, unique int64 ids (H,) of its hot rows. A table
            missing here, or with H == 0, stays whole and cold; with H == N, whole and hot.
        device: where the weights live (None: TorchRec's default, CPU).
        is_weighted: whether input KJTs carry per-id weights.
        validate_ids: check in every forward that ids lie in [0, N) (one host sync); an
            out-of-range id would otherwise read a wrong row silently.
        presum: once sharded, add each split feature's hot and cold pooled outputs on their
            rank before TorchRec's output all-to-all where both halves are table-wise on one
            rank (`presum.py`; VBE batches are merged after it). False: always merge after.
        config_order: once sharded, return the outputs in config order (what the unsharded
            module returns; for models that read `values()` by position) instead of TorchRec's
            sharding-group order (what a stock sharded EBC returns); costs a copy per step.

    A feature name may belong to several tables (TorchRec's `f@table` outputs) only when none of
    them is split and all or none are MEAN; NotImplementedError otherwise.
    """

    split_attr = SPLIT_MODULE_ATTR
    pooled = True

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        hot_ids: Mapping[str, HotIds],
        device: torch.device | None = None,
        is_weighted: bool = False,
        *,
        validate_ids: bool = True,
        presum: bool = True,
        config_order: bool = False,
    ) -> None:
        super().__init__()
        split_hot = self._init_tables(tables, hot_ids, validate_ids)
        self._is_weighted = is_weighted
        self._presum_enabled = presum
        self._presum: Presum | None = None  # see `presum_sharded`
        inner_configs: list[EmbeddingBagConfig] = []
        parts_index: list[list[int]] = []
        mean_features: set[str] = set()
        for t in self._tables:
            parts = [
                dataclasses.replace(p, pooling=PoolingType.SUM, init_fn=t.init_fn)
                for p in self._part_configs(t, split_hot)
            ]
            if t.pooling == PoolingType.MEAN:
                mean_features.update(t.feature_names)
            parts_index.append(list(range(len(inner_configs), len(inner_configs) + len(parts))))
            inner_configs += parts
        self._check_shared_features(mean_features)
        inner = EmbeddingBagCollection(
            tables=inner_configs, is_weighted=is_weighted or bool(mean_features), device=device
        )
        self._init_inner(inner, split_hot, mean_features)

        # logical output key -> inner output keys that are summed into it
        inner_names = get_embedding_names_by_table(inner_configs)
        outputs: list[tuple[str, list[str]]] = []
        dims: list[int] = []
        logical_names = get_embedding_names_by_table(self._tables)
        for t, names, idx in zip(self._tables, logical_names, parts_index, strict=True):
            for j, name in enumerate(names):
                outputs.append((name, [inner_names[i][j] for i in idx]))
                dims.append(t.embedding_dim)
        # unsharded lookups, in the inner EBC's order: (inner table, feature, output name)
        self._lookups = [
            (c.name, f, name)
            for c, names in zip(inner_configs, inner_names, strict=True)
            for f, name in zip(c.feature_names, names, strict=True)
        ]

        self.merge = PooledMerge(outputs, dims, config_order)

    def _check_shared_features(self, mean_features: set[str]) -> None:
        owners: dict[str, list[EmbeddingBagConfig]] = {}
        for t in self._tables:
            for f in t.feature_names:
                owners.setdefault(f, []).append(t)
        for f, ts in owners.items():
            if len(ts) < 2:
                continue
            split = [t.name for t in ts if self._placements[t.name] is Placement.SPLIT]
            means = {t.pooling == PoolingType.MEAN for t in ts}
            if split or len(means) > 1:
                raise NotImplementedError(
                    f"feature {f!r} is shared by tables {[t.name for t in ts]}: a shared feature "
                    "needs all its tables unsplit and all or none MEAN-pooled"
                )

    def is_weighted(self) -> bool:
        return self._is_weighted

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        """The LOGICAL table configs (as given, feature names filled in as TorchRec does)."""
        return self._tables

    def presummed_features(self) -> list[str]:
        """Logical outputs whose hot and cold halves are added on their rank before the output
        all-to-all (empty before the first sharded forward, and unsharded)."""
        return list(self._presum.summed_features) if self._presum else []

    def presum_sharded(self) -> Presum | None:
        """Once the inner collection is sharded, patches it (once; again if DMP rebuilt it or
        its dists) to add co-located hot and cold outputs before the output all-to-all, and
        returns the patch (None when not sharded or `presum=False`). The first sharded forward
        calls this; call it earlier to see the result or to hook the patched modules."""
        inner = self.split_module
        if not self._presum_enabled or not isinstance(inner, ShardedEmbeddingBagCollection):
            return None
        if self._presum is None or self._presum.output_dists is not inner._output_dists:
            pairs = {
                (parts[0], parts[1]): name for name, parts in self.merge.outputs if len(parts) == 2
            }
            self._presum = presum_sharded_ebc(inner, pairs)
        return self._presum

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pool `features` (logical keys; per key B samples, or VBE) into a KeyedTensor with the
        logical embedding names in logical order, values (B, sum of D) float32.

        Each logical output is `hot + cold` (its inner outputs, in this order). When the inner
        collection is a plain unsharded `EmbeddingBagCollection` and the batch is not VBE, its
        tables are called here one by one, exactly as its own forward calls them (its forward
        hooks do not run), so that its concatenated (B, up to 2x sum of D) output and the split
        of that output's gradient are never built, and `cold` is added into `hot`'s fresh
        output in place (same float sum, one (B, D) temporary less per split feature).
        Sharded, the inner module's KeyedTensor (in TorchRec's sharding-group key order) is
        merged by name; when every split feature was summed on its rank (`presum`) nothing is
        left to merge and the output comes in TorchRec's sharding-group key order, as a stock
        sharded EBC's does (`config_order=True`: copied into config order, one copy of the
        output and of its gradient per step). Sharded and
        validating, the ranks agree on every batch's ids first (`agree.py`): a bad id on one
        rank raises on every rank instead of leaving the others in the input all-to-all."""
        inner = self.split_module
        kjt = self._remapped(features, isinstance(inner, ShardedEmbeddingBagCollection))
        in_place = type(inner) is EmbeddingBagCollection and not kjt.variable_stride_per_key()
        if in_place:  # each key's ids are one slice of the values: no per-key JaggedTensors
            values, offsets, weights = kjt.values(), kjt.offsets(), kjt.weights_or_none()
            start, stride = kjt.offset_per_key(), kjt.stride()
            index = {key: i for i, key in enumerate(kjt.keys())}
            pooled = {}
            for table, f, name in self._lookups:
                i = index[f]
                ids = slice(start[i], start[i + 1])
                pooled[name] = inner.embedding_bags[table](
                    input=values[ids],
                    offsets=offsets[i * stride : (i + 1) * stride + 1] - start[i],
                    per_sample_weights=weights[ids] if inner.is_weighted() else None,
                ).float()
            return self.merge.sum_pooled(pooled)
        presum = self.presum_sharded()
        # VBE: TorchRec's per-feature all-to-all, halves merged after. A train pipeline traces
        # this forward once (symbolically, to find the inner module's input): nothing to pick.
        if presum is not None and not isinstance(features, torch.fx.Proxy):
            presum.select(inner, vbe=features.variable_stride_per_key())
        return self.merge(inner(kjt))  # sharded: outputs in sharding-group order, merged by name

    @classmethod
    def from_ebc(
        cls,
        ebc: EmbeddingBagCollection,
        hot_ids: Mapping[str, HotIds],
        *,
        validate_ids: bool = True,
        presum: bool = True,
        config_order: bool = False,
    ) -> HotColdEmbeddingBagCollection:
        """A hot/cold module with `ebc`'s tables, device, weighting and weights (copied)."""
        module = cls(
            ebc.embedding_bag_configs(),
            hot_ids,
            device=ebc.device,
            is_weighted=ebc.is_weighted(),
            validate_ids=validate_ids,
            presum=presum,
            config_order=config_order,
        )
        if ebc.device.type != "meta":
            with torch.no_grad():
                module.load_state_dict(ebc.state_dict())
        return module
