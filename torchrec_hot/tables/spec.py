"""Table shapes as profiles and plans record them, and how two sets of tables differ."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for hints: the `profile` command never imports TorchRec (~2 s)
    from torchrec.modules.embedding_configs import BaseEmbeddingConfig


@dataclass(frozen=True)
class TableSpec:
    """The shape of one logical embedding table, as a profile records it."""

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: tuple[str, ...]

    @staticmethod
    def from_config(config: BaseEmbeddingConfig) -> TableSpec:
        return TableSpec(
            name=config.name,
            num_embeddings=int(config.num_embeddings),
            embedding_dim=int(config.embedding_dim),
            feature_names=tuple(config.feature_names),
        )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "feature_names": list(self.feature_names),
        }

    @staticmethod
    def from_json(data: dict) -> TableSpec:
        return TableSpec(
            str(data["name"]),
            int(data["num_embeddings"]),
            int(data["embedding_dim"]),
            tuple(str(f) for f in data["feature_names"]),
        )


def as_specs(tables: Sequence[BaseEmbeddingConfig | TableSpec]) -> list[TableSpec]:
    """`TableSpec`s of `tables` (configs are converted, specs kept)."""
    return [t if isinstance(t, TableSpec) else TableSpec.from_config(t) for t in tables]


def table_differences(
    expected: Sequence[TableSpec], found: Sequence[TableSpec], check_dims: bool = True
) -> list[str]:
    """Lists, one line each, how the tables in `found` differ from those in `expected`."""
    want = {t.name: t for t in expected}
    have = {t.name: t for t in found}
    lines = [f"table {n!r} is missing from the profile" for n in want if n not in have]
    lines += [f"table {n!r} is in the profile but not in the model" for n in have if n not in want]
    for name in want.keys() & have.keys():
        w, h = want[name], have[name]
        if w.num_embeddings != h.num_embeddings:
            lines.append(
                f"table {name!r}: model has {w.num_embeddings} rows, profile {h.num_embeddings}"
            )
        if check_dims and w.embedding_dim != h.embedding_dim:
            lines.append(f"table {name!r}: model dim {w.embedding_dim}, profile {h.embedding_dim}")
        if set(w.feature_names) != set(h.feature_names):
            lines.append(
                f"table {name!r}: model features {sorted(w.feature_names)}, "
                f"profile features {sorted(h.feature_names)}"
            )
    return sorted(lines)
