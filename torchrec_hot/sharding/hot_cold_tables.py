"""`HotColdTables`: what the hot/cold EmbeddingBagCollection and EmbeddingCollection share.

A hot/cold module holds logical tables (as the stock module it replaces would) in an inner stock
collection of split tables (names from `tables/split.py`) under the attribute `split_attr`
(`split_ebc` / `split_ec`), which DistributedModelParallel shards like any other. This base
keeps the logical tables and where their rows are (`placements`, the hot ids inside the id
remapper), gives the codec view of them (`logical_tables`, `tables/rows.py`), registers the
state-dict hooks that show the stock (logical) layout, and runs the id check, which under DMP
every rank agrees on (`agree.py`). Subclasses build the inner collection and the forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torchrec import KeyedJaggedTensor
from torchrec.modules.embedding_configs import BaseEmbeddingConfig

from torchrec_hot.sharding.agree import raise_on_any_rank
from torchrec_hot.sharding.hot_cold_state import (
    logical_state_dict_hook,
    split_state_dict_pre_hook,
)
from torchrec_hot.sharding.remap.remapper import KJTRemapper
from torchrec_hot.tables.rows import EC_TABLES_ATTR, TABLES_ATTR, LogicalTable
from torchrec_hot.tables.split import Placement, part_names, placement_of, split_table_configs

HotIds = torch.Tensor | np.ndarray


def checked_hot_ids(ids: HotIds | None, table: BaseEmbeddingConfig) -> torch.Tensor:
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


class HotColdTables(nn.Module):
    """Base of the hot/cold modules (see the module docstring). `pooled`: an
    EmbeddingBagCollection's tables (else an EmbeddingCollection's)."""

    split_attr: str
    pooled: bool

    def _init_tables(
        self,
        tables: Sequence[BaseEmbeddingConfig],
        hot_ids: Mapping[str, HotIds],
        validate_ids: bool,
    ) -> dict[str, torch.Tensor]:
        """Keeps the logical tables (feature names filled in as TorchRec does) and their
        placements; returns the checked hot ids of the split tables."""
        self._tables = [
            dataclasses.replace(t, feature_names=list(t.feature_names) or [t.name]) for t in tables
        ]
        names = [t.name for t in self._tables]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate table names in {names}")
        unknown = set(hot_ids) - set(names)
        if unknown:
            raise ValueError(f"hot ids given for unknown tables {sorted(unknown)}")
        self._validate_ids = validate_ids
        split_hot: dict[str, torch.Tensor] = {}
        self._placements: dict[str, Placement] = {}
        for t in self._tables:
            ids = checked_hot_ids(hot_ids.get(t.name), t)
            self._placements[t.name] = placement_of(ids.numel(), t.num_embeddings)
            if self._placements[t.name] is Placement.SPLIT:
                split_hot[t.name] = ids
        return split_hot

    def _part_configs(
        self, table: BaseEmbeddingConfig, split_hot: Mapping[str, torch.Tensor]
    ) -> list[BaseEmbeddingConfig]:
        """The inner tables of logical `table` (`split_table_configs`)."""
        placement = self._placements[table.name]
        if placement is Placement.SPLIT:
            return split_table_configs(table, int(split_hot[table.name].numel()))
        return [table]  # whole, in HBM or in UVM

    def _init_inner(
        self, inner: nn.Module, split_hot: dict[str, torch.Tensor], mean_features: Collection[str]
    ) -> None:
        """Installs the inner collection and the id remapper (a feature of several tables is
        remapped for the table with the fewest rows), and registers the state-dict hooks."""
        table_of_feature: dict[str, str] = {}
        for t in sorted(self._tables, key=lambda t: -t.num_embeddings):
            table_of_feature.update({f: t.name for f in t.feature_names})  # smallest N wins
        self.remap = KJTRemapper(
            table_of_feature=table_of_feature,
            num_embeddings={t.name: t.num_embeddings for t in self._tables},
            hot_ids=split_hot,
            mean_features=set(mean_features),
        )
        setattr(self, self.split_attr, inner)
        if self.device.type != "meta":  # on meta the hot ids would be lost: they stay on CPU
            self.remap.to(self.device)
        self.register_state_dict_post_hook(logical_state_dict_hook)
        self.register_load_state_dict_pre_hook(split_state_dict_pre_hook)

    @property
    def split_module(self) -> nn.Module:
        """The inner stock collection of split tables (`split_attr`)."""
        return getattr(self, self.split_attr)

    @property
    def remapper(self) -> KJTRemapper:
        """The id remapper (`remap`), also while a TorchRec train pipeline has wrapped it to run
        ahead of the forward (`PipelinedPostproc`)."""
        remap = self.remap
        return remap if isinstance(remap, KJTRemapper) else remap.postproc_module

    @property
    def device(self) -> torch.device:
        return self.split_module.device

    def split_table_names(self, table: str) -> list[str]:
        """Names of the inner tables holding logical `table`: [T__hot, T__cold] or [T]."""
        return part_names(table, self._placements[table] is Placement.SPLIT)

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
        moving the rows' weights and optimizer state is `runtime.migrate.replan`'s job."""
        if self._placements[table] is not Placement.SPLIT:
            raise ValueError(f"table {table!r} is not split")
        self.remapper.set_hot_ids(table, hot_ids)

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
                pooled=self.pooled,
            )
            for t in self._tables
        ]

    def _merged(self, of_param) -> dict[str, torch.Tensor | None]:
        inner = getattr(self.split_module, TABLES_ATTR if self.pooled else EC_TABLES_ATTR)
        out: dict[str, torch.Tensor | None] = {}
        for table in self.logical_tables():
            parts = [of_param(inner[p].weight) for p in table.parts()]
            out[table.name] = None if any(p is None for p in parts) else table.merge(parts)
        return out

    def logical_weights(self) -> dict[str, torch.Tensor]:
        """Logical table name -> its (N, D) weights merged from the hot and cold parts (a copy
        for split tables; the parameter itself, detached, for whole tables)."""
        return self._merged(lambda w: w.detach())  # type: ignore[return-value]

    def logical_grads(self) -> dict[str, torch.Tensor | None]:
        """Like `logical_weights`, for the `.grad` of the inner parameters (None if absent)."""
        return self._merged(lambda w: w.grad)

    def _remapped(self, features: KeyedJaggedTensor, sharded: bool) -> KeyedJaggedTensor:
        """`features` remapped into the split tables' features, ids checked when validating.
        Sharded under torch.distributed, every rank learns of a bad id on any rank and raises
        it (`agree.py`) instead of waiting in TorchRec's input all-to-all."""
        if not (
            self._validate_ids
            and sharded
            and dist.is_initialized()
            and not isinstance(features, torch.fx.Proxy)
        ):
            return self.remap(features, validate=self._validate_ids)
        try:
            kjt, error = self.remap(features, validate=True), None
        except ValueError as e:
            kjt, error = features, str(e)
        env = getattr(self.split_module, "_env", None)
        raise_on_any_rank(error, getattr(env, "process_group", None), features.device())
        return kjt
