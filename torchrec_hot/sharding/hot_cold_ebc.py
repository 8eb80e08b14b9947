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

The state-dict hooks live in `hot_cold_state.py`, the merge of sharded outputs in
`hot_cold_merge.py`; how rows, state and keys split and merge is `tables.rows.LogicalTable`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, KeyedTensor
from torchrec.distributed.embeddingbag import ShardedEmbeddingBagCollection
from torchrec.modules.embedding_configs import PoolingType
from torchrec.modules.embedding_modules import get_embedding_names_by_table

from torchrec_hot.sharding.agree import raise_on_any_rank
from torchrec_hot.sharding.hot_cold_merge import PooledMerge
from torchrec_hot.sharding.hot_cold_state import (
    logical_state_dict_hook,
    split_state_dict_pre_hook,
)
from torchrec_hot.sharding.presum import Presum, presum_sharded_ebc
from torchrec_hot.sharding.remap.remapper import KJTRemapper
from torchrec_hot.tables.rows import LogicalTable
from torchrec_hot.tables.split import (
    SPLIT_MODULE_ATTR,
    Placement,
    placement_of,
    split_table_configs,
)

HotIds = torch.Tensor | np.ndarray


def _checked_hot_ids(ids: HotIds | None, table: EmbeddingBagConfig) -> torch.Tensor:
    """(H,) int64 CPU tensor of sorted, unique ids in [0, N); ValueError otherwise."""
    if ids is None:
        return torch.zeros(0, dtype=torch.int64)
    t = torch.as_tensor(ids).detach().cpu()
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"table {table.name!r}: hot ids must be a 1-D integer tensor")
    t = t.to(torch.int64)
    if t.numel() and (int(t[0]) < 0 or int(t[-1]) >= table.num_embeddings):
        raise ValueError(
            f"table {table.name!r}: hot ids must lie in [0, {table.num_embeddings}), "
            f"got {int(t.min())}..{int(t.max())}"
        )
    if t.numel() > 1 and not bool((t[1:] > t[:-1]).all()):
        raise ValueError(f"table {table.name!r}: hot ids must be sorted and unique")
    return t


class HotColdEmbeddingBagCollection(nn.Module):
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

    A feature name may belong to several tables (TorchRec's `f@table` outputs) only when none of
    them is split and all or none are MEAN; NotImplementedError otherwise.
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        hot_ids: Mapping[str, HotIds],
        device: torch.device | None = None,
        is_weighted: bool = False,
        *,
        validate_ids: bool = True,
        presum: bool = True,
    ) -> None:
        super().__init__()
        self._tables = [
            dataclasses.replace(t, feature_names=list(t.feature_names) or [t.name]) for t in tables
        ]
        names = [t.name for t in self._tables]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate table names in {names}")
        unknown = set(hot_ids) - set(names)
        if unknown:
            raise ValueError(f"hot ids given for unknown tables {sorted(unknown)}")
        self._is_weighted = is_weighted
        self._validate_ids = validate_ids
        self._presum_enabled = presum
        self._presum: Presum | None = None  # see `presum_sharded`

        split_hot: dict[str, torch.Tensor] = {}
        self._placements: dict[str, Placement] = {}
        self._parts: dict[str, list[str]] = {}  # logical table -> its inner table names
        inner_configs: list[EmbeddingBagConfig] = []
        parts_index: list[list[int]] = []
        mean_features: set[str] = set()
        for t in self._tables:
            ids = _checked_hot_ids(hot_ids.get(t.name), t)
            self._placements[t.name] = placement_of(ids.numel(), t.num_embeddings)
            if self._placements[t.name] is Placement.SPLIT:
                split_hot[t.name] = ids
            parts = [
                dataclasses.replace(p, pooling=PoolingType.SUM, init_fn=t.init_fn)
                for p in split_table_configs(t, ids.numel())
            ]
            if t.pooling == PoolingType.MEAN:
                mean_features.update(t.feature_names)
            self._parts[t.name] = [p.name for p in parts]
            parts_index.append(list(range(len(inner_configs), len(inner_configs) + len(parts))))
            inner_configs += parts
        self._check_shared_features(mean_features)

        table_of_feature: dict[str, str] = {}
        for t in sorted(self._tables, key=lambda t: -t.num_embeddings):
            table_of_feature.update({f: t.name for f in t.feature_names})  # smallest N wins
        self.remap = KJTRemapper(
            table_of_feature=table_of_feature,
            num_embeddings={t.name: t.num_embeddings for t in self._tables},
            hot_ids=split_hot,
            mean_features=mean_features,
        )
        inner = EmbeddingBagCollection(
            tables=inner_configs, is_weighted=is_weighted or bool(mean_features), device=device
        )
        setattr(self, SPLIT_MODULE_ATTR, inner)
        if inner.device.type != "meta":  # on meta the hot ids would be lost: they stay on CPU
            self.remap.to(inner.device)

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

        self.merge = PooledMerge(outputs, dims)
        self.register_state_dict_post_hook(logical_state_dict_hook)
        self.register_load_state_dict_pre_hook(split_state_dict_pre_hook)

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

    @property
    def split_module(self) -> EmbeddingBagCollection:
        """The inner stock EmbeddingBagCollection of split tables (`split_ebc`)."""
        return getattr(self, SPLIT_MODULE_ATTR)

    @property
    def remapper(self) -> KJTRemapper:
        """The id remapper (`remap`), also while a TorchRec train pipeline has wrapped it to run
        ahead of the forward (`PipelinedPostproc`)."""
        remap = self.remap
        return remap if isinstance(remap, KJTRemapper) else remap.postproc_module

    @property
    def device(self) -> torch.device:
        return self.split_module.device

    def is_weighted(self) -> bool:
        return self._is_weighted

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        """The LOGICAL table configs (as given, feature names filled in as TorchRec does)."""
        return self._tables

    def split_table_names(self, table: str) -> list[str]:
        """Names of the inner tables holding logical `table`: [T__hot, T__cold] or [T]."""
        return list(self._parts[table])

    def placements(self) -> dict[str, Placement]:
        """Logical table name -> SPLIT / HBM (whole, all hot) / UVM (whole, all cold)."""
        return dict(self._placements)

    def hot_ids(self, table: str) -> torch.Tensor:
        """Sorted hot ids (H,) int64 of logical table `table` (all N ids for an HBM table, none
        for a UVM table), on the module's device."""
        placement = self._placements[table]
        if placement is Placement.SPLIT:
            return self.remapper.hot_ids(table)
        n = next(t.num_embeddings for t in self._tables if t.name == table)
        return torch.arange(n if placement is Placement.HBM else 0, device=self.device)

    def set_hot_ids(self, table: str, hot_ids: torch.Tensor) -> None:
        """Gives split `table` other hot rows, as many as before. Only the id mapping changes:
        moving the rows' weights and optimizer state is `sharding.migrate.replan`'s job."""
        if self._placements[table] is not Placement.SPLIT:
            raise ValueError(f"table {table!r} is not split")
        self.remapper.set_hot_ids(table, hot_ids)

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

    def logical_tables(self) -> list[LogicalTable]:
        """Each logical table with its hot ids (CPU): the codec of its rows, state and keys."""
        return [
            LogicalTable(
                t.name,
                t.num_embeddings,
                t.embedding_dim,
                self.remapper.hot_ids(t.name).cpu()
                if self._placements[t.name] is Placement.SPLIT
                else None,
            )
            for t in self._tables
        ]

    def _merged(self, of_param) -> dict[str, torch.Tensor | None]:
        bags = self.split_module.embedding_bags
        out: dict[str, torch.Tensor | None] = {}
        for table in self.logical_tables():
            parts = [of_param(bags[p].weight) for p in table.parts()]
            out[table.name] = None if any(p is None for p in parts) else table.merge(parts)
        return out

    def logical_weights(self) -> dict[str, torch.Tensor]:
        """Logical table name -> its (N, D) weights merged from the hot and cold parts (a copy
        for split tables; the parameter itself, detached, for whole tables)."""
        return self._merged(lambda w: w.detach())  # type: ignore[return-value]

    def logical_grads(self) -> dict[str, torch.Tensor | None]:
        """Like `logical_weights`, for the `.grad` of the inner parameters (None if absent)."""
        return self._merged(lambda w: w.grad)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pool `features` (logical keys; per key B samples, or VBE) into a KeyedTensor with the
        logical embedding names in logical order, values (B, sum of D) float32.

        Each logical output is `hot + cold` (its inner outputs, in this order). When the inner
        collection is a plain unsharded `EmbeddingBagCollection` and the batch is not VBE, its
        tables are called here one by one, exactly as its own forward calls them (its forward
        hooks do not run), so that its concatenated (B, up to 2x sum of D) output and the split
        of that output's gradient are never built, and `cold` is added into `hot`'s fresh
        output in place (same float sum, one (B, D) temporary less per split feature).
        Sharded, the inner module's KeyedTensor is merged by name; when every split feature
        was summed on its rank (`presum`) nothing is left to merge and the output comes in
        TorchRec's sharding-group key order, as a stock sharded EBC's does. Sharded and
        validating, the ranks agree on every batch's ids first (`agree.py`): a bad id on one
        rank raises on every rank instead of leaving the others in the input all-to-all."""
        inner = self.split_module
        if (
            self._validate_ids
            and isinstance(inner, ShardedEmbeddingBagCollection)
            and dist.is_initialized()
            and not isinstance(features, torch.fx.Proxy)
        ):
            try:
                kjt, error = self.remap(features, validate=True), None
            except ValueError as e:
                kjt, error = features, str(e)
            env = getattr(inner, "_env", None)
            raise_on_any_rank(error, getattr(env, "process_group", None), features.device())
        else:
            kjt = self.remap(features, validate=self._validate_ids)
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
    ) -> HotColdEmbeddingBagCollection:
        """A hot/cold module with `ebc`'s tables, device, weighting and weights (copied)."""
        module = cls(
            ebc.embedding_bag_configs(),
            hot_ids,
            device=ebc.device,
            is_weighted=ebc.is_weighted(),
            validate_ids=validate_ids,
            presum=presum,
        )
        if ebc.device.type != "meta":
            with torch.no_grad():
                module.load_state_dict(ebc.state_dict())
        return module
