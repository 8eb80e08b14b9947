"""Re-planning while training: new hot rows for a running DMP model, rows and optimizer state
moved in memory, the logical model unchanged.

    new_plan = rehot_plan(plan, recent_profile)         # same hot sizes, today's hottest rows
    report = replan(dmp, new_plan)                      # collective, between two steps

The hot/cold tables keep their sizes and shards (the TorchRec sharding plan stays valid); which
logical row sits in which slot changes. Every split table whose hot set changed is moved through
the plan-independent row blocks of `rows.py` (weights and every fused-optimizer state), then
scattered back under the new hot ids, so each logical row keeps its exact weights and state:
training after a migration is bit-identical to training without one. The cost is an
all-to-all of each changed table (all its rows, not only the rows that changed hotness).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from torchrec_hot.planner.hot_plan import HotPlan
from torchrec_hot.sharding.apply import hot_cold_modules
from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection
from torchrec_hot.sharding.rows.blocks import to_row_blocks
from torchrec_hot.sharding.rows.layout import (
    Table,
    blocks_tensor,
    optim_state_of,
    optimizer_kinds,
    scatter_rows,
    state_pieces,
    tables_of,
    weight_pieces,
)


@dataclass(frozen=True)
class MigrationReport:
    """What `replan` did: per logical table, rows that became hot (= rows that became cold);
    tables moved; wall seconds on this rank."""

    rows_moved: dict[str, int]
    tables_moved: int
    seconds: float


def replan(model: nn.Module, new_plan: HotPlan) -> MigrationReport:
    """Gives every hot/cold module of `new_plan` the new plan's hot ids, moving rows and
    optimizer state between its hot and cold tables on every rank (collective; call it between
    steps). The new plan must keep every table's hot row count; every table is checked before
    any row moves."""
    start = time.perf_counter()
    modules = hot_cold_modules(model)
    logical = {p: {t.name: t for t in m.logical_tables()} for p, m in modules.items()}
    changed: dict[str, tuple[HotColdEmbeddingBagCollection, torch.Tensor]] = {}
    moved: dict[str, int] = {}
    keys: set[str] = set()
    for tp in new_plan.tables:
        prefix = f"{tp.module_path}." if tp.module_path else ""
        if prefix not in modules:
            raise ValueError(f"no hot/cold module at {tp.module_path!r}")
        module = modules[prefix]
        if module.placements()[tp.name].value != "split":
            if tp.placement.value == "split":
                raise ValueError(f"table {tp.name!r} is not split in the running model")
            continue
        old = module.hot_ids(tp.name).cpu()
        new = torch.from_numpy(np.asarray(tp.hot_ids, dtype=np.int64))
        if new.numel() != old.numel():
            raise ValueError(
                f"table {tp.name!r}: the new plan has {new.numel()} hot rows, the model "
                f"{old.numel()}; changing hot sizes needs a re-shard (checkpoint and reload)"
            )
        if not torch.equal(old, new):
            changed[tp.name] = (module, new)
            moved[tp.name] = int(np.setdiff1d(new.numpy(), old.numpy()).size)
            keys.add(logical[prefix][tp.name].key(prefix))
    state = model.state_dict()
    tables = [t for t in tables_of(model, state) if t.key in keys]
    if missing := keys - {t.key for t in tables}:  # never change ids whose rows cannot move
        raise RuntimeError(f"no rows found for {sorted(missing)} in the model's state dict")
    optim_state = optim_state_of(model)
    kinds = optimizer_kinds(tables, optim_state) if dist.is_initialized() else {}
    blocks = _to_blocks(tables, state, optim_state, kinds)
    for name, (module, ids) in changed.items():
        module.set_hot_ids(name, ids)
    state = model.state_dict()
    optim_state = optim_state_of(model)
    tables = [t for t in tables_of(model, state) if t.key in keys]
    for table in tables:
        scatter_rows(blocks[table.key], table, lambda p: state[p.key], False)
        for kind in sorted(kinds.get(table.key, {})):
            scatter_rows(blocks[f"{table.key}/{kind}"], table,
                     lambda p, k=kind: optim_state.get(p.key, {}).get(f"{p.table}.{k}"), True)
    model.load_state_dict(state)
    if optim_state:
        current = model.fused_optimizer.state_dict()  # type: ignore[union-attr]
        current["state"] = optim_state
        model.fused_optimizer.load_state_dict(current)  # type: ignore[union-attr]
    return MigrationReport(moved, len(changed), time.perf_counter() - start)


def _to_blocks(tables: list[Table], state: dict, optim_state: dict, kinds: dict) -> dict:
    """Row blocks (as 2-D ShardedTensor-like holders) of every table and optimizer state."""
    out = {}
    for table in tables:
        dtype = state[table.parts[0].key].dtype
        block = to_row_blocks(weight_pieces(table, state), table.num_rows, table.dim, dtype)
        out[table.key] = blocks_tensor(block, table.num_rows)
        for kind, (width, kdtype) in sorted(kinds.get(table.key, {}).items()):
            block = to_row_blocks(state_pieces(table, kind, optim_state), table.num_rows,
                                  width, kdtype)
            out[f"{table.key}/{kind}"] = blocks_tensor(block, table.num_rows)
    return out
