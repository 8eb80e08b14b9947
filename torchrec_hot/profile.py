"""Row popularity: exact per-row lookup counts per embedding table, from KJT batches.

A `PopularityProfile` holds, for every logical table of a model, an int64 vector of length
`num_embeddings` whose entry `i` is the number of lookups of row `i` seen so far (a weighted
feature counts one lookup per id, whatever its weight). Several features may share a table
(`EmbeddingBagConfig.feature_names`); their lookups add up in that table's counts.

Counts live in torch int64 tensors on the CPU and are accumulated with `index_add_`, so one
batch costs O(ids in the batch), not O(rows of the table).

Files: `save(path)` writes one `.npz` (no pickles) with a format version, the tables' names,
sizes, dims and features, the counters and one `counts_<i>` array per table.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

FORMAT_VERSION = 1
_MAGIC = "torchrec-hot-profile"


class ProfileFormatError(ValueError):
    """A profile file is missing, truncated, corrupt or of another format version."""


@dataclass(frozen=True)
class TableSpec:
    """The shape of one logical embedding table, as a profile records it."""

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: tuple[str, ...]

    @staticmethod
    def from_config(config: EmbeddingBagConfig) -> TableSpec:
        return TableSpec(
            name=config.name,
            num_embeddings=int(config.num_embeddings),
            embedding_dim=int(config.embedding_dim),
            feature_names=tuple(config.feature_names),
        )


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


class PopularityProfile:
    """Exact per-row lookup counts of every table, plus how much input was seen.

    Args:
        tables: the model's tables (`EmbeddingBagConfig`s or `TableSpec`s).
    """

    def __init__(self, tables: Sequence[EmbeddingBagConfig | TableSpec]) -> None:
        specs = [t if isinstance(t, TableSpec) else TableSpec.from_config(t) for t in tables]
        names = [t.name for t in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"table names must be unique, got {names}")
        self._tables: dict[str, TableSpec] = {t.name: t for t in specs}
        self._feature_to_table: dict[str, str] = {}
        for spec in specs:
            for feature in spec.feature_names:
                if feature in self._feature_to_table:
                    raise ValueError(f"feature {feature!r} is mapped to two tables")
                self._feature_to_table[feature] = spec.name
        self._counts: dict[str, torch.Tensor] = {
            t.name: torch.zeros(t.num_embeddings, dtype=torch.int64) for t in specs
        }
        self.num_batches = 0
        self.num_samples = 0

    # ---- accumulation -------------------------------------------------------------------
    def update(self, kjt: KeyedJaggedTensor) -> None:
        """Adds one batch's lookups. Validates every feature before counting any of them, so
        a bad batch raises `ValueError` and leaves the profile unchanged."""
        keys = kjt.keys()
        unknown = [k for k in keys if k not in self._feature_to_table]
        if unknown:
            raise ValueError(
                f"features {unknown} belong to no table of the profile "
                f"(known features: {sorted(self._feature_to_table)})"
            )
        values = kjt.values().to("cpu", torch.int64)
        per_key = values.split(kjt.length_per_key())
        for key, ids in zip(keys, per_key, strict=True):
            if ids.numel() == 0:
                continue
            table = self._tables[self._feature_to_table[key]]
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= table.num_embeddings:
                bad = low if low < 0 else high
                raise ValueError(
                    f"feature {key!r} (table {table.name!r}, {table.num_embeddings} rows) has "
                    f"id {bad}, outside [0, {table.num_embeddings})"
                )
        for key, ids in zip(keys, per_key, strict=True):
            counts = self._counts[self._feature_to_table[key]]
            counts.index_add_(0, ids, torch.ones_like(ids))
        self.num_batches += 1
        self.num_samples += int(kjt.stride())

    def update_all(self, batches: Iterable[KeyedJaggedTensor]) -> PopularityProfile:
        """Adds every batch of `batches`; returns self."""
        for kjt in batches:
            self.update(kjt)
        return self

    # ---- queries ------------------------------------------------------------------------
    @property
    def tables(self) -> list[TableSpec]:
        return list(self._tables.values())

    def table(self, name: str) -> TableSpec:
        if name not in self._tables:
            raise KeyError(f"no table {name!r} in the profile (tables: {list(self._tables)})")
        return self._tables[name]

    def counts(self, table: str) -> np.ndarray:
        """Lookups per row of `table`: int64 array of length num_embeddings (a copy)."""
        self.table(table)
        return self._counts[table].numpy().copy()

    def lookups(self, table: str) -> int:
        """Total lookups of `table` seen."""
        self.table(table)
        return int(self._counts[table].sum())

    def hot_share(self, table: str, k: int) -> float:
        """Share (0..1) of `table`'s lookups taken by its `k` most accessed rows."""
        counts = self._counts[self.table(table).name]
        total = int(counts.sum())
        if total == 0 or k <= 0:
            return 0.0
        k = min(k, counts.numel())
        return float(torch.topk(counts, k, sorted=False).values.sum()) / total

    def check_matches(
        self, tables: Sequence[EmbeddingBagConfig | TableSpec], check_dims: bool = True
    ) -> None:
        """Raises `ValueError` listing every difference between the model's tables and ours
        (names, row counts, features and, unless `check_dims` is False, dims)."""
        specs = [t if isinstance(t, TableSpec) else TableSpec.from_config(t) for t in tables]
        diffs = table_differences(specs, self.tables, check_dims)
        if diffs:
            raise ValueError(
                "the profile does not match the model's tables:\n  " + "\n  ".join(diffs)
            )

    # ---- files --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Writes the profile to one `.npz` file at `path`."""
        specs = self.tables
        meta = {
            "magic": _MAGIC,
            "format_version": FORMAT_VERSION,
            "num_batches": self.num_batches,
            "num_samples": self.num_samples,
            "tables": [
                {
                    "name": t.name,
                    "num_embeddings": t.num_embeddings,
                    "embedding_dim": t.embedding_dim,
                    "feature_names": list(t.feature_names),
                }
                for t in specs
            ],
        }
        arrays = {f"counts_{i}": self._counts[t.name].numpy() for i, t in enumerate(specs)}
        with open(path, "wb") as f:
            np.savez(f, meta=np.array(json.dumps(meta)), **arrays)

    @staticmethod
    def load(path: str | Path) -> PopularityProfile:
        """Reads a profile written by `save`; raises `ProfileFormatError` on a bad file."""
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                if meta.get("magic") != _MAGIC:
                    raise ProfileFormatError(f"{path} is not a torchrec-hot profile")
                if meta.get("format_version") != FORMAT_VERSION:
                    raise ProfileFormatError(
                        f"{path} has profile format version {meta.get('format_version')}, "
                        f"this torchrec-hot reads version {FORMAT_VERSION}"
                    )
                specs = [
                    TableSpec(
                        t["name"],
                        int(t["num_embeddings"]),
                        int(t["embedding_dim"]),
                        tuple(t["feature_names"]),
                    )
                    for t in meta["tables"]
                ]
                profile = PopularityProfile(specs)
                for i, spec in enumerate(specs):
                    counts = np.asarray(data[f"counts_{i}"])
                    if counts.shape != (spec.num_embeddings,) or counts.dtype != np.int64:
                        raise ProfileFormatError(
                            f"{path}: counts of table {spec.name!r} have shape {counts.shape} "
                            f"and dtype {counts.dtype}, expected ({spec.num_embeddings},) int64"
                        )
                    profile._counts[spec.name] = torch.from_numpy(counts.copy())
                profile.num_batches = int(meta["num_batches"])
                profile.num_samples = int(meta["num_samples"])
                return profile
        except ProfileFormatError:
            raise
        except FileNotFoundError as e:
            raise ProfileFormatError(f"profile file {path} does not exist") from e
        except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, TypeError) as e:
            raise ProfileFormatError(
                f"{path} is not a readable torchrec-hot profile (corrupt or truncated?): {e}"
            ) from e
