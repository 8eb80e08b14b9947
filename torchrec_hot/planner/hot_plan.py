"""`HotPlan`: which rows of which tables are hot, where every shard lives, and why.

A plan covers every planned embedding module of a model: each `TablePlan` names the module it
belongs to (`module_path`), and table names are unique across the model (as TorchRec's
`ParameterConstraints` assume). A plan is a frozen value. `to_json(path)` writes `path` (JSON:
tables, sizes, bytes per rank, the TorchRec `ShardingPlan`, the stock comparison) and a sidecar
`<stem>.hot_ids.npz` with every table's sorted hot ids; `from_json(path)` reads both back and
checks they belong together. Format 2 records each table's module; format-1 files (one module
for the whole plan) still load.
Units: bytes are per rank and include optimizer state; lookups are counts from the profile.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torchrec import EmbeddingBagConfig
from torchrec.distributed.types import ShardingPlan

from torchrec_hot.planner.plan_io import sharding_plan_from_dict, sharding_plan_to_dict
from torchrec_hot.planner.strategy.summary import StrategySummary
from torchrec_hot.tables.split import Placement, placement_of

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_MAGIC = "torchrec-hot-plan"


class PlanFormatError(ValueError):
    """A plan file (or its hot-ids sidecar) is missing, truncated, corrupt or mismatched."""


@dataclass(frozen=True, eq=False)
class TablePlan:
    """One logical table's share of the plan.

    Attributes:
        hot_ids: sorted unique int64 row ids of the hot rows, shape (hot_rows,).
        lookups: lookups of the table in the profile.
        hot_lookups: of those, lookups of the hot rows.
        row_bytes: bytes one row costs (weights + optimizer state).
        strategy: how the table's rows reach HBM (a `strategies.Strategy` value; "static" for a
            plain hot/cold split or a whole table).
        cache_rows: HBM cache slots (rows, all ranks) in front of the table's UVM rows (the cold
            half of a split table, or the whole table when it has no hot rows); 0: no cache.
        cache_algorithm: "lru" or "lfu", FBGEMM's replacement policy for the cache.
        prefetch: the cache is filled batches ahead (TorchRec's prefetch pipeline).
        module_path: path of the embedding module holding the table ("" for the root).
        constrained: the user's `ParameterConstraints` place the table (kept whole, as given).
        pooled: an EmbeddingBagCollection's table (else an EmbeddingCollection's).
        expected_hot_lookups: lookups the hot rows are expected to serve out of sample, on the
            scale of `lookups` (`planner.expected`; None: not estimated, an old plan file).
    """

    name: str
    num_embeddings: int
    embedding_dim: int
    feature_names: tuple[str, ...]
    hot_ids: np.ndarray
    lookups: int
    hot_lookups: int
    row_bytes: int
    strategy: str = "static"
    cache_rows: int = 0
    cache_algorithm: str = "lru"
    prefetch: bool = False
    module_path: str = ""
    constrained: bool = False
    pooled: bool = True
    expected_hot_lookups: float | None = None

    @property
    def hot_rows(self) -> int:
        return int(self.hot_ids.shape[0])

    @property
    def placement(self) -> Placement:
        return placement_of(self.hot_rows, self.num_embeddings)

    @property
    def hot_lookup_share(self) -> float:
        """In-sample share (0..1) of the profile's lookups of the table that its hot rows took."""
        return self.hot_lookups / self.lookups if self.lookups else 0.0

    @property
    def expected_hot_share(self) -> float:
        """Share (0..1) of the table's lookups its hot rows are expected to serve out of
        sample (`expected_hot_lookups`; the in-sample share where it was not estimated)."""
        if self.expected_hot_lookups is None:
            return self.hot_lookup_share
        return self.expected_hot_lookups / self.lookups if self.lookups else 0.0

    @property
    def uvm_rows(self) -> int:
        """Rows of the table that live in UVM (the cold half, or the whole table)."""
        return self.num_embeddings - self.hot_rows

    @property
    def cache_load_factor(self) -> float:
        """Cache slots per UVM row (TorchRec's `CacheParams.load_factor`); 0 without a cache."""
        return self.cache_rows / self.uvm_rows if self.cache_rows and self.uvm_rows else 0.0


@dataclass(frozen=True, eq=False)
class StockComparison:
    """What stock TorchRec's planner does with the same tables, topology and budget.

    Attributes:
        sharding_plan: the stock plan, or None when TorchRec found none.
        error: TorchRec's reason when it found no plan.
        hbm_lookups: per table, expected lookups served from HBM under the stock plan.
        hbm_bytes_per_rank / uvm_bytes_per_rank: weights + optimizer state per rank.
        hbm_cap_bytes: HBM per rank of the topology stock TorchRec planned against.
    """

    sharding_plan: ShardingPlan | None
    error: str | None
    hbm_lookups: dict[str, float]
    hbm_bytes_per_rank: tuple[int, ...]
    uvm_bytes_per_rank: tuple[int, ...]
    hbm_cap_bytes: int


@dataclass(frozen=True, eq=False)
class HotPlan:
    """The result of `HotPlanner.plan`.

    Attributes:
        tables: per logical table, module after module, in each module's table order.
        hbm_budget_bytes: HBM per rank for embedding rows (weights + optimizer state).
        hbm_cap_bytes: HBM per rank given to TorchRec's topology (budget + its reservations).
        hbm_bytes_per_rank / uvm_bytes_per_rank: weights + optimizer state of this plan.
        sharding_plan: TorchRec plan of the split tables, keyed by `split_module_path` of each
            module's path.
        stock: the stock TorchRec comparison, when computed.
        tuned_stock: the same for TorchRec's embedding offloading (`stock.py`), when computed
            (CUDA topologies).
        strategies: the per-table strategy choice and its modeled times, when the planner
            chose strategies (`HotPlanner(..., strategies=...)`).
        hbm_share_source: how the tables' `expected_hot_lookups` were estimated
            (`planner.expected`); "" where they were not (an old plan file: in-sample).
    """

    tables: tuple[TablePlan, ...]
    world_size: int
    compute_device: str
    batch_size: int
    optimizer: str | None
    hbm_budget_bytes: int
    hbm_cap_bytes: int
    hbm_bytes_per_rank: tuple[int, ...]
    uvm_bytes_per_rank: tuple[int, ...]
    sharding_plan: ShardingPlan
    stock: StockComparison | None = None
    strategies: StrategySummary | None = None
    hbm_share_source: str = ""
    tuned_stock: StockComparison | None = None

    @property
    def module_paths(self) -> list[str]:
        """Paths of the planned modules, in plan order."""
        return list(dict.fromkeys(t.module_path for t in self.tables))

    def tables_in(self, module_path: str) -> tuple[TablePlan, ...]:
        """The tables of the module at `module_path` (KeyError when the plan has none)."""
        tables = tuple(t for t in self.tables if t.module_path == module_path)
        if not tables:
            raise KeyError(f"no module {module_path!r} in the plan (modules: {self.module_paths})")
        return tables

    def table(self, name: str) -> TablePlan:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"no table {name!r} in the plan")

    @property
    def hot_ids(self) -> dict[str, np.ndarray]:
        """Table name -> sorted hot ids (all modules; table names are unique in a plan)."""
        return {t.name: t.hot_ids for t in self.tables}

    @property
    def hot_lookup_share(self) -> float:
        """Share of all of the profile's lookups that the hot rows took (in-sample)."""
        total = sum(t.lookups for t in self.tables)
        return sum(t.hot_lookups for t in self.tables) / total if total else 0.0

    def logical_configs(self, module_path: str | None = None) -> list[EmbeddingBagConfig]:
        """The logical tables of one module (None: all; pooling is the model's concern and not
        recorded: SUM here)."""
        tables = self.tables if module_path is None else self.tables_in(module_path)
        return [
            EmbeddingBagConfig(
                name=t.name,
                num_embeddings=t.num_embeddings,
                embedding_dim=t.embedding_dim,
                feature_names=list(t.feature_names),
            )
            for t in tables
        ]

    # ---- files --------------------------------------------------------------------------
    def to_json(self, path: str | Path) -> None:
        """Writes the plan to `path` and its hot ids to `<stem>.hot_ids.npz` beside it."""
        path = Path(path)
        sidecar = path.with_suffix(".hot_ids.npz")
        arrays = {f"hot_ids_{i}": t.hot_ids.astype(np.int64) for i, t in enumerate(self.tables)}
        with open(sidecar, "wb") as f:
            np.savez(f, **arrays)
        doc: dict[str, Any] = {
            "magic": _MAGIC,
            "format_version": FORMAT_VERSION,
            "hot_ids_file": sidecar.name,
            "hot_ids_sha256": hashlib.sha256(sidecar.read_bytes()).hexdigest(),
            "world_size": self.world_size,
            "compute_device": self.compute_device,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "hbm_budget_bytes": self.hbm_budget_bytes,
            "hbm_cap_bytes": self.hbm_cap_bytes,
            "hbm_bytes_per_rank": list(self.hbm_bytes_per_rank),
            "uvm_bytes_per_rank": list(self.uvm_bytes_per_rank),
            "tables": [
                {
                    "name": t.name,
                    "num_embeddings": t.num_embeddings,
                    "embedding_dim": t.embedding_dim,
                    "feature_names": list(t.feature_names),
                    "hot_rows": t.hot_rows,
                    "lookups": t.lookups,
                    "hot_lookups": t.hot_lookups,
                    "expected_hot_lookups": t.expected_hot_lookups,
                    "row_bytes": t.row_bytes,
                    "strategy": t.strategy,
                    "cache_rows": t.cache_rows,
                    "cache_algorithm": t.cache_algorithm,
                    "prefetch": t.prefetch,
                    "module_path": t.module_path,
                    "constrained": t.constrained,
                    "pooled": t.pooled,
                }
                for t in self.tables
            ],
            "sharding_plan": sharding_plan_to_dict(self.sharding_plan),
            "stock": _stock_to_dict(self.stock),
            "tuned_stock": _stock_to_dict(self.tuned_stock),
            "strategies": self.strategies.to_dict() if self.strategies else None,
            "hbm_share_source": self.hbm_share_source,
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        tmp.replace(path)

    @staticmethod
    def from_json(path: str | Path) -> HotPlan:
        """Reads a plan written by `to_json`; raises `PlanFormatError` on a bad file."""
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise PlanFormatError(f"plan file {path} does not exist") from e
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise PlanFormatError(f"{path} is not valid JSON (corrupt or truncated?): {e}") from e
        if not isinstance(doc, dict) or doc.get("magic") != _MAGIC:
            raise PlanFormatError(f"{path} is not a torchrec-hot plan")
        if doc.get("format_version") not in READABLE_VERSIONS:
            raise PlanFormatError(
                f"{path} has plan format version {doc.get('format_version')}, "
                f"this torchrec-hot reads versions {READABLE_VERSIONS}"
            )
        try:
            return _plan_from_doc(doc, path)
        except PlanFormatError:
            raise
        except (KeyError, TypeError, ValueError, OSError) as e:
            raise PlanFormatError(f"{path} is not a readable torchrec-hot plan: {e!r}") from e


def _plan_from_doc(doc: dict[str, Any], path: Path) -> HotPlan:
    sidecar = path.parent / doc["hot_ids_file"]
    if not sidecar.exists():
        raise PlanFormatError(f"hot-ids file {sidecar} of plan {path} does not exist")
    if hashlib.sha256(sidecar.read_bytes()).hexdigest() != doc["hot_ids_sha256"]:
        raise PlanFormatError(f"hot-ids file {sidecar} does not match plan {path} (checksum)")
    tables = []
    default_path = doc.get("module_path", "")  # format 1: one module for the whole plan
    with np.load(sidecar, allow_pickle=False) as ids:
        for i, t in enumerate(doc["tables"]):
            hot_ids = np.asarray(ids[f"hot_ids_{i}"], dtype=np.int64)
            if hot_ids.shape != (t["hot_rows"],):
                raise PlanFormatError(f"table {t['name']!r}: hot ids do not match the plan")
            tables.append(
                TablePlan(
                    name=t["name"],
                    num_embeddings=int(t["num_embeddings"]),
                    embedding_dim=int(t["embedding_dim"]),
                    feature_names=tuple(t["feature_names"]),
                    hot_ids=hot_ids,
                    lookups=int(t["lookups"]),
                    hot_lookups=int(t["hot_lookups"]),
                    row_bytes=int(t["row_bytes"]),
                    strategy=str(t.get("strategy", "static")),
                    cache_rows=int(t.get("cache_rows", 0)),
                    cache_algorithm=str(t.get("cache_algorithm", "lru")),
                    prefetch=bool(t.get("prefetch", False)),
                    module_path=str(t.get("module_path", default_path)),
                    constrained=bool(t.get("constrained", False)),
                    pooled=bool(t.get("pooled", True)),
                    expected_hot_lookups=(
                        None if t.get("expected_hot_lookups") is None
                        else float(t["expected_hot_lookups"])
                    ),
                )
            )
    return HotPlan(
        tables=tuple(tables),
        world_size=int(doc["world_size"]),
        compute_device=doc["compute_device"],
        batch_size=int(doc["batch_size"]),
        optimizer=doc["optimizer"],
        hbm_budget_bytes=int(doc["hbm_budget_bytes"]),
        hbm_cap_bytes=int(doc["hbm_cap_bytes"]),
        hbm_bytes_per_rank=tuple(doc["hbm_bytes_per_rank"]),
        uvm_bytes_per_rank=tuple(doc["uvm_bytes_per_rank"]),
        sharding_plan=sharding_plan_from_dict(doc["sharding_plan"]),
        stock=_stock_from_dict(doc["stock"]),
        tuned_stock=_stock_from_dict(doc.get("tuned_stock")),
        strategies=(
            StrategySummary.from_dict(doc["strategies"]) if doc.get("strategies") else None
        ),
        hbm_share_source=str(doc.get("hbm_share_source", "")),
    )


def _stock_to_dict(stock: StockComparison | None) -> dict[str, Any] | None:
    if stock is None:
        return None
    return {
        "sharding_plan": (
            sharding_plan_to_dict(stock.sharding_plan) if stock.sharding_plan else None
        ),
        "error": stock.error,
        "hbm_lookups": stock.hbm_lookups,
        "hbm_bytes_per_rank": list(stock.hbm_bytes_per_rank),
        "uvm_bytes_per_rank": list(stock.uvm_bytes_per_rank),
        "hbm_cap_bytes": stock.hbm_cap_bytes,
    }


def _stock_from_dict(d: dict[str, Any] | None) -> StockComparison | None:
    if d is None:
        return None
    return StockComparison(
        sharding_plan=sharding_plan_from_dict(d["sharding_plan"]) if d["sharding_plan"] else None,
        error=d["error"],
        hbm_lookups={k: float(v) for k, v in d["hbm_lookups"].items()},
        hbm_bytes_per_rank=tuple(d["hbm_bytes_per_rank"]),
        uvm_bytes_per_rank=tuple(d["uvm_bytes_per_rank"]),
        hbm_cap_bytes=int(d["hbm_cap_bytes"]),
    )
