"""`apply_hot_plan`: swap each of a model's planned EmbeddingBagCollections for its hot/cold
version; `hot_cold_modules`: find the swapped modules in a model.

    model = DLRM(embedding_bag_collection=EmbeddingBagCollection(tables, device="meta"), ...)
    apply_optimizer_in_backward(RowWiseAdagrad, model.sparse_arch.parameters(), {"lr": 0.01})
    model = apply_hot_plan(model, HotPlan.from_json("plan.json"))
    dmp = DistributedModelParallel(model, plan=plan.sharding_plan, device=device)

The swap happens before any weight is touched: a plan whose tables differ from the model's
(missing table, other row count, dim or features) raises `ValueError` listing every difference.
Fused optimizers attached to the EBC's weights with `apply_optimizer_in_backward` are attached
to the split tables too, so DMP builds the same fused optimizer for them.
"""

from __future__ import annotations

from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingCollection
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from torchrec_hot.planner.hot_plan import HotPlan
from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection
from torchrec_hot.sharding.hot_cold_ec import HotColdEmbeddingCollection
from torchrec_hot.sharding.hot_cold_tables import HotColdTables
from torchrec_hot.tables.modules import fused_optimizer, table_configs
from torchrec_hot.tables.spec import TableSpec, table_differences
from torchrec_hot.tables.split import split_module_path


def check_plan_matches(module: nn.Module, plan: HotPlan, module_path: str) -> None:
    """Raises `ValueError` listing how the tables of `module` (an EmbeddingBagCollection or
    EmbeddingCollection) differ from those `plan` made for the module at `module_path`."""
    model = [TableSpec.from_config(c) for c in table_configs(module) or []]
    planned = [
        TableSpec(t.name, t.num_embeddings, t.embedding_dim, t.feature_names)
        for t in plan.tables_in(module_path)
    ]
    diffs = [d.replace("profile", "plan") for d in table_differences(model, planned)]
    if diffs:
        raise ValueError(
            f"the plan does not match the {type(module).__name__} at {module_path!r}:\n  "
            + "\n  ".join(diffs)
        )
    key = split_module_path(module_path, isinstance(module, EmbeddingBagCollection))
    if key not in plan.sharding_plan.plan:
        raise ValueError(f"the plan's sharding plan has no entry for {key!r}")


def apply_hot_plan(
    model: nn.Module,
    plan: HotPlan,
    *,
    validate_ids: bool = True,
    presum: bool = True,
    config_order: bool = False,
) -> nn.Module:
    """Replaces every module the plan covers (at each of `plan.module_paths`; "" is the model
    itself): an EmbeddingBagCollection by a `HotColdEmbeddingBagCollection`, an
    EmbeddingCollection by a `HotColdEmbeddingCollection`, with the plan's hot ids and the
    module's weights (meta stays meta). Every module is checked against the plan before any is
    replaced. Returns the model (the new module when the path is "").
    `validate_ids`, `presum`, `config_order`: as for `HotColdEmbeddingBagCollection`."""
    found = {}
    for path in plan.module_paths:
        module = model.get_submodule(path) if path else model
        if type(module) not in (EmbeddingBagCollection, EmbeddingCollection):
            raise TypeError(
                f"{path or 'the model'} is a {type(module).__name__}, not an "
                "EmbeddingBagCollection or EmbeddingCollection"
            )
        check_plan_matches(module, plan, path)
        found[path] = module
    for path, module in found.items():
        hot_ids = {t.name: t.hot_ids for t in plan.tables_in(path)}
        if isinstance(module, EmbeddingBagCollection):
            hot_cold: nn.Module = HotColdEmbeddingBagCollection.from_ebc(
                module, hot_ids, validate_ids=validate_ids, presum=presum,
                config_order=config_order,
            )
        else:
            hot_cold = HotColdEmbeddingCollection.from_ec(
                module, hot_ids, validate_ids=validate_ids
            )
        _carry_fused_optimizer(module, hot_cold)
        if not path:
            return hot_cold
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, hot_cold)
    return model


def hot_cold_modules(model: nn.Module) -> dict[str, HotColdTables]:
    """State-dict prefix (e.g. "sparse_arch.embedding_bag_collection.") -> hot/cold module of
    a plain or DistributedModelParallel model ("" when the model is the module itself)."""
    root = model.module if isinstance(model, DistributedModelParallel) else model
    if isinstance(root, HotColdTables):
        return {"": root}
    return {f"{name}.": m for name, m in root.named_modules() if isinstance(m, HotColdTables)}


def _carry_fused_optimizer(module: nn.Module, hot_cold: nn.Module) -> None:
    """Attaches the in-backward optimizer of `module`'s weights (if any) to the split tables."""
    found = fused_optimizer(module)
    if found is not None:
        split = hot_cold.split_module  # type: ignore[attr-defined]
        apply_optimizer_in_backward(found[0], split.parameters(), found[1])
