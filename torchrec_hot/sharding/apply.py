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
from torchrec import EmbeddingBagCollection
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

from torchrec_hot.planner.hot_plan import HotPlan
from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection
from torchrec_hot.tables.spec import TableSpec, table_differences
from torchrec_hot.tables.split import split_module_path


def check_plan_matches(ebc: EmbeddingBagCollection, plan: HotPlan, module_path: str) -> None:
    """Raises `ValueError` listing how `ebc`'s tables differ from those `plan` made for the
    module at `module_path`."""
    model = [TableSpec.from_config(c) for c in ebc.embedding_bag_configs()]
    planned = [
        TableSpec(t.name, t.num_embeddings, t.embedding_dim, t.feature_names)
        for t in plan.tables_in(module_path)
    ]
    diffs = [d.replace("profile", "plan") for d in table_differences(model, planned)]
    if diffs:
        raise ValueError(
            f"the plan does not match the EmbeddingBagCollection at {module_path!r}:\n  "
            + "\n  ".join(diffs)
        )
    if split_module_path(module_path) not in plan.sharding_plan.plan:
        raise ValueError(
            f"the plan's sharding plan has no entry for {split_module_path(module_path)!r}"
        )


def apply_hot_plan(
    model: nn.Module, plan: HotPlan, *, validate_ids: bool = True, presum: bool = True
) -> nn.Module:
    """Replaces every EmbeddingBagCollection the plan covers (at each of `plan.module_paths`;
    "" is the model itself) by a `HotColdEmbeddingBagCollection` with the plan's hot ids and
    the EBC's weights (meta stays meta). Every module is checked against the plan before any
    is replaced. Returns the model (the new module when the path is "").
    `validate_ids`, `presum`: as for `HotColdEmbeddingBagCollection`."""
    ebcs = {}
    for path in plan.module_paths:
        ebc = model.get_submodule(path) if path else model
        if not isinstance(ebc, EmbeddingBagCollection):
            raise TypeError(
                f"{path or 'the model'} is a {type(ebc).__name__}, not an EmbeddingBagCollection"
            )
        check_plan_matches(ebc, plan, path)
        ebcs[path] = ebc
    for path, ebc in ebcs.items():
        hot_ids = {t.name: t.hot_ids for t in plan.tables_in(path)}
        hot_cold = HotColdEmbeddingBagCollection.from_ebc(
            ebc, hot_ids, validate_ids=validate_ids, presum=presum
        )
        _carry_fused_optimizer(ebc, hot_cold)
        if not path:
            return hot_cold
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, name, hot_cold)
    return model


def hot_cold_modules(model: nn.Module) -> dict[str, HotColdEmbeddingBagCollection]:
    """State-dict prefix (e.g. "sparse_arch.embedding_bag_collection.") -> hot/cold module of
    a plain or DistributedModelParallel model ("" when the model is the module itself)."""
    root = model.module if isinstance(model, DistributedModelParallel) else model
    if isinstance(root, HotColdEmbeddingBagCollection):
        return {"": root}
    return {
        f"{name}.": m
        for name, m in root.named_modules()
        if isinstance(m, HotColdEmbeddingBagCollection)
    }


def _carry_fused_optimizer(ebc: EmbeddingBagCollection, hot_cold: nn.Module) -> None:
    """Attaches the in-backward optimizer of `ebc`'s weights (if any) to the split tables."""
    weights = list(ebc.parameters())
    classes = getattr(weights[0], "_optimizer_classes", None) if weights else None
    if not classes:
        return
    if any(getattr(w, "_optimizer_classes", None) != classes for w in weights):
        raise ValueError("tables of one EmbeddingBagCollection use different fused optimizers")
    kwargs = weights[0]._optimizer_kwargs[0]  # type: ignore[attr-defined]
    split = hot_cold.split_module  # type: ignore[attr-defined]
    apply_optimizer_in_backward(classes[0], split.parameters(), dict(kwargs))
