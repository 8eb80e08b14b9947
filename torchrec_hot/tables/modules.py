"""The embedding modules of a whole model, as TorchRec's sharders find them.

`embedding_modules(model)` walks the model and returns every module that holds embedding tables:
`EmbeddingBagCollection`s (weighted or not), `EmbeddingCollection`s, and hot/cold versions of
either (any module with `embedding_bag_configs()` or `embedding_configs()`), keyed by module
path ("" for the model itself), without descending into them. `model_tables` lists their
tables; table names must be unique across the model, as TorchRec's `ParameterConstraints`
(keyed by table name) assume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn
from torchrec.modules.embedding_configs import BaseEmbeddingConfig


def table_configs(module: nn.Module) -> list[BaseEmbeddingConfig] | None:
    """The table configs of an embedding module (logical ones for a hot/cold module); None
    when `module` holds no embedding tables."""
    for method in ("embedding_bag_configs", "embedding_configs"):
        get = getattr(module, method, None)
        if callable(get):
            return list(get())
    return None


def embedding_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> embedding module, in the order `named_modules` visits them."""
    found: dict[str, nn.Module] = {}

    def visit(module: nn.Module, path: str) -> None:
        if table_configs(module) is not None:
            found[path] = module
            return
        for name, child in module.named_children():
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")
    return found


def model_tables(model: nn.Module) -> dict[str, list[BaseEmbeddingConfig]]:
    """Module path -> its table configs, for every embedding module of `model`; ValueError when
    a table name occurs twice in the model or the model has no embedding module."""
    tables = {path: table_configs(m) or [] for path, m in embedding_modules(model).items()}
    if not tables:
        raise ValueError(f"{type(model).__name__} has no EmbeddingBagCollection or "
                         "EmbeddingCollection")
    check_unique_tables(tables)
    return tables


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
