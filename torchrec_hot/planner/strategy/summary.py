"""What the strategy choice decided and why, as plain data a plan carries to its report.

Times are modeled milliseconds of embedding work per training step (see `cost_model`), per
rank; byte counts are per step, all ranks together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class TableStrategy:
    """One logical table's chosen strategy beside the runner-up.

    Attributes:
        table: logical table name.
        strategy: chosen `Strategy` value.
        hbm_rows: rows of HBM it uses (hot rows + cache slots), all ranks.
        modeled_ms: modeled ms per step of the table under the chosen strategy.
        runner_up: the best strategy of another kind ("" when there is none).
        runner_up_ms: its modeled ms per step (at most the same HBM bytes).
        hbm_hit_rate: share of the table's lookups served from HBM (0..1) out of sample: its
            static hot rows by `planner.expected`, its cache by the simulation on held-out
            batches (`StrategyEvaluation.hbm_share`).
        host_link_bytes: bytes per step over the host link (UVM reads, fills, write-backs).
        measured_batches: held-out global batches the choice was measured on (after warm-up).
        warmup_batches: the held-out global batches before them that only warmed caches.
    """

    table: str
    strategy: str
    hbm_rows: int
    modeled_ms: float
    runner_up: str
    runner_up_ms: float
    hbm_hit_rate: float
    host_link_bytes: float
    measured_batches: int = 0
    warmup_batches: int = 0


@dataclass(frozen=True)
class StrategySummary:
    """The strategy choice of a plan.

    Attributes:
        hardware: name of the hardware preset the cost model used.
        lookahead: batches the look-forward cache prefetches ahead.
        evaluated_on: where the traces came from ("holdout" or "profile trace").
        tables: per logical table, in plan order.
        model_ms: modeled embedding ms per step of the whole model for "ours" and the
            alternatives ("stock", "all static", "all lru", "all hbm", ...).
        model_hit_rate: share of all lookups served from HBM for the same keys (tables
            weighted by their profiled lookups; each table's share as `TableStrategy`'s).
        model_link_bytes: host-link bytes per step for the same keys.
        notes: lines that explain the model's verdicts (e.g. what overlap hides).
        stock_hit_rate: per table, the share of its lookups stock TorchRec's plan serves from
            HBM, by the same definition (empty: stock not compared).
        tuned_stock_hit_rate: the same for stock TorchRec's embedding offloading plan
            (`evaluation.TUNED_STOCK`; empty: not compared, or a plan file from before it).
        global_batch: samples per held-out global batch (world size x batch size; 0: unknown).
    """

    hardware: str
    lookahead: int
    evaluated_on: str
    tables: tuple[TableStrategy, ...]
    model_ms: dict[str, float]
    model_hit_rate: dict[str, float]
    model_link_bytes: dict[str, float]
    notes: tuple[str, ...] = ()
    stock_hit_rate: dict[str, float] = field(default_factory=dict)
    global_batch: int = 0
    tuned_stock_hit_rate: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tables"] = [asdict(t) for t in self.tables]
        d["notes"] = list(self.notes)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> StrategySummary:
        return StrategySummary(
            hardware=str(d["hardware"]),
            lookahead=int(d["lookahead"]),
            evaluated_on=str(d["evaluated_on"]),
            tables=tuple(TableStrategy(**t) for t in d["tables"]),
            model_ms={k: float(v) for k, v in d["model_ms"].items()},
            model_hit_rate={k: float(v) for k, v in d["model_hit_rate"].items()},
            model_link_bytes={k: float(v) for k, v in d["model_link_bytes"].items()},
            notes=tuple(d.get("notes", ())),
            stock_hit_rate={k: float(v) for k, v in d.get("stock_hit_rate", {}).items()},
            global_batch=int(d.get("global_batch", 0)),
            tuned_stock_hit_rate={
                k: float(v) for k, v in d.get("tuned_stock_hit_rate", {}).items()
            },
        )
