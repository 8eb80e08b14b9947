"""The embedding modules of a whole model, as TorchRec's sharders find them.

`embedding_modules(model)` walks the model and returns every module that holds embedding tables:
`EmbeddingBagCollection`s (weighted or not), `EmbeddingCollection`s, and hot/cold versions of
either (any module with `embedding_bag_configs()` or `embedding_configs()`), keyed by module
path ("" for the model itself), without descending into them. Modules that TorchRec shards as
a whole around tables of their own (`STOCK_SHARDED`: feature-processed, fused,
managed-collision and quantised collections; and any type in `leaves`, e.g. the module types of
a user's own sharders) are returned too, also without descending: they are left to TorchRec's
planner. `model_tables` lists the tables torchrec-hot plans (those of the other modules); table
names must be unique across the model, as TorchRec's `ParameterConstraints` (keyed by table
name) assume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn
from torchrec.modules.embedding_configs import BaseEmbeddingConfig
from torchrec.modules.fp_embedding_modules import FeatureProcessedEmbeddingBagCollection
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.modules.mc_embedding_modules import (
    ManagedCollisionEmbeddingBagCollection,
    ManagedCollisionEmbeddingCollection,
)
from torchrec.quant.embedding_modules import EmbeddingBagCollection as QuantEmbeddingBagCollection
from torchrec.quant.embedding_modules import EmbeddingCollection as QuantEmbeddingCollection

# TorchRec modules with a sharder of their own around their tables: planned by TorchRec as they
# are, never split (their sharders expect the stock collection inside).
STOCK_SHARDED: tuple[type[nn.Module], ...] = (
    FeatureProcessedEmbeddingBagCollection,
    FusedEmbeddingBagCollection,
    ManagedCollisionEmbeddingBagCollection,
    ManagedCollisionEmbeddingCollection,
    QuantEmbeddingBagCollection,
    QuantEmbeddingCollection,
)


def table_configs(module: nn.Module) -> list[BaseEmbeddingConfig] | None:
    """The table configs of an embedding module (logical ones for a hot/cold module); None
    when `module` holds no embedding tables."""
    for method in ("embedding_bag_configs", "embedding_configs"):
        get = getattr(module, method, None)
        if callable(get):
            return list(get())
    return None


def is_stock_sharded(module: nn.Module, leaves: tuple[type, ...] = ()) -> bool:
    """Whether `module` is left to TorchRec's planner whole (`STOCK_SHARDED` or `leaves`)."""
    return type(module) in STOCK_SHARDED + tuple(leaves)


def embedding_modules(model: nn.Module, leaves: tuple[type, ...] = ()) -> dict[str, nn.Module]:
    """Module path -> embedding module (or stock-sharded module, see the module docstring), in
    the order `named_modules` visits them."""
    found: dict[str, nn.Module] = {}

    def visit(module: nn.Module, path: str) -> None:
        if is_stock_sharded(module, leaves) or table_configs(module) is not None:
            found[path] = module
            return
        for name, child in module.named_children():
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")
    return found


def model_tables(model: nn.Module) -> dict[str, list[BaseEmbeddingConfig]]:
    """Module path -> its table configs, for every embedding module of `model` that is not
    stock-sharded; ValueError when a table name occurs twice in the model or the model has no
    embedding module."""
    tables = {
        path: table_configs(m) or []
        for path, m in embedding_modules(model).items()
        if not is_stock_sharded(m)
    }
    if not tables:
        raise ValueError(f"{type(model).__name__} has no EmbeddingBagCollection or "
                         "EmbeddingCollection")
    check_unique_tables(tables)
    return tables


def stock_sharded_features(model: nn.Module) -> set[str]:
    """Features read by the tables inside `model`'s stock-sharded modules (not planned)."""
    return {
        f
        for m in embedding_modules(model).values()
        if is_stock_sharded(m)
        for sub in m.modules()
        for c in (table_configs(sub) or [])
        for f in c.feature_names
    }


def fused_optimizer(module: nn.Module) -> tuple[type, dict] | None:
    """(optimizer class, kwargs) that `apply_optimizer_in_backward` attached to `module`'s
    weights, None when none is; ValueError when its weights use different ones."""
    weights = list(module.parameters())
    classes = getattr(weights[0], "_optimizer_classes", None) if weights else None
    if not classes:
        return None
    if any(getattr(w, "_optimizer_classes", None) != classes for w in weights):
        raise ValueError(f"tables of one {type(module).__name__} use different fused optimizers")
    return classes[0], dict(weights[0]._optimizer_kwargs[0])  # type: ignore[attr-defined]


def check_unique_tables(modules: Mapping[str, Sequence[BaseEmbeddingConfig]]) -> None:
    """ValueError when a table name occurs twice among `modules` (path -> table configs)."""
    seen: dict[str, str] = {}
    for path, configs in modules.items():
        for c in configs:
            if c.name in seen:
                raise ValueError(
                    f"table {c.name!r} is in both {seen[c.name] or 'the model'!r} and "
                    f"{path or 'the model'!r}: table names must be unique across the model "
                    "(TorchRec's ParameterConstraints are keyed by table name)"
                )
            seen[c.name] = path
