"""Sharding report rows: what a plan puts where, beside what stock TorchRec would do (as data).

`build_report(plan)` is a pure function of the `HotPlan` (which carries the stock comparison
and the strategy summary); `report.text.format_report` turns its result into text. Bytes are
weights plus optimizer state.

"Served from HBM" has one definition in every row of a report, ours and stock, static, cached
and look-forward tables alike: the share of a table's lookups *in new input* (not the profile
the rows were chosen on) that reach a row in HBM, `hbm_definition(plan)`:
  * hot rows (a static split, a whole table in HBM, a stock plan's cache counted as its
    `clf x rows` hottest rows where no simulation measured it): the plan's out-of-sample estimate
    (`planner.expected`: the hold-out's own lookups when the plan had one, else the profile's
    Good-Turing estimate);
  * a cache (ours or stock, when the strategy section simulated it): its hit rate on the
    held-out batches after warm-up, over the lookups the hot rows leave.
Stock is TorchRec's default plan and, beside it, its embedding offloading plan ("tuned stock",
`TUNED_STOCK`: caches sized by `EmbeddingOffloadScaleupProposer`), both by that definition.
Per-rank lookups are those shares times the profile's lookups, spread over each part's shards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from torchrec.distributed.types import ParameterSharding

from torchrec_hot.planner.hot_plan import HotPlan, StockComparison, TablePlan
from torchrec_hot.planner.plan_io import parameter_shardings, shard_rows_per_rank
from torchrec_hot.planner.stock import hbm_fraction
from torchrec_hot.planner.strategy.evaluation import TUNED_STOCK
from torchrec_hot.planner.strategy.summary import StrategySummary
from torchrec_hot.tables.split import COLD_SUFFIX, HOT_SUFFIX, Placement

# Fewer held-out global batches than this behind the strategy choice draw a warning: a cache's
# hit rate varies from batch to batch, and with the default `max_batches` (16, 12 measured after
# warm-up) a choice rests on at least 12; below 8 a few unusual batches decide it.
MIN_EVIDENCE_BATCHES = 8


@dataclass(frozen=True)
class TableRow:
    """One logical table under one plan. `hbm_rows`: rows in HBM (hot rows + cache slots, or a
    stock cache's `clf * rows`); percentages are 0..100, `hbm_lookup_pct` by the report's
    definition of served from HBM (module docstring)."""

    table: str
    rows: int
    dim: int
    hbm_rows: int
    hbm_row_pct: float
    hbm_lookup_pct: float
    hbm_bytes: int
    uvm_bytes: int
    sharding: str
    kernel: str
    ranks: str


@dataclass(frozen=True)
class RankRow:
    """Totals of one rank under one plan: bytes and expected lookups served from HBM (the
    table shares times the profile's lookups)."""

    rank: int
    hbm_bytes: int
    uvm_bytes: int
    hbm_lookups: float


@dataclass(frozen=True)
class PlanColumns:
    """All rows of one plan (ours or stock); `error` set when TorchRec found no plan.
    `hbm_lookup_share`: share (0..1) of all lookups served from HBM, the tables' shares
    weighted by their profiled lookups."""

    name: str
    tables: tuple[TableRow, ...]
    ranks: tuple[RankRow, ...]
    hbm_lookup_share: float
    error: str | None = None


@dataclass(frozen=True)
class Evidence:
    """How many held-out global batches (of `global_batch` samples) the strategy choice was
    measured on: the fewest of any table, after `warmup` batches that only warmed caches;
    `too_few` when below `MIN_EVIDENCE_BATCHES`."""

    measured: int
    warmup: int
    global_batch: int
    too_few: bool


@dataclass(frozen=True)
class Setting:
    """What the plan was made for: ranks, device, HBM budget and TorchRec's hbm_cap per rank
    (bytes), batch size per rank, optimizer (None: none)."""

    world_size: int
    compute_device: str
    hbm_budget_bytes: int
    hbm_cap_bytes: int
    batch_size: int
    optimizer: str | None


@dataclass(frozen=True)
class ShardingReport:
    """A report. `hbm_definition`: what "served from HBM" means in it (printed once);
    `strategies`: the strategy summary with ours / stock HBM shares as in the rest of the
    report; `evidence`: the held-out batches behind it (None without strategies);
    `tuned_stock`: stock TorchRec's embedding offloading plan (None: `tuned_stock_absent` says
    why)."""

    setting: Setting
    ours: PlanColumns
    stock: PlanColumns | None
    stock_hbm_cap: int | None
    modules: tuple[str, ...] = ()
    constrained: tuple[str, ...] = ()
    strategies: StrategySummary | None = None
    hbm_definition: str = ""
    evidence: Evidence | None = None
    tuned_stock: PlanColumns | None = None
    tuned_stock_hbm_cap: int | None = None
    tuned_stock_absent: str = ""


def _ranks_text(ranks: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    out: list[str] = []
    rs = sorted(set(ranks))
    i = 0
    while i < len(rs):
        j = i
        while j + 1 < len(rs) and rs[j + 1] == rs[j] + 1:
            j += 1
        out.append(str(rs[i]) if i == j else f"{rs[i]}-{rs[j]}")
        i = j + 1
    return ",".join(out)


def _ps_ranks(ps: ParameterSharding, world: int) -> list[int]:
    return list(range(world)) if ps.ranks is None else list(ps.ranks)


_SHORT = {
    "table_wise": "TW",
    "row_wise": "RW",
    "column_wise": "CW",
    "table_row_wise": "TWRW",
    "table_column_wise": "TWCW",
    "data_parallel": "DP",
    "grid_shard": "GRID",
}


def hbm_definition(plan: HotPlan) -> str:
    """What "served from HBM" means in `plan`'s report (module docstring), in one line."""
    if not plan.hbm_share_source:
        return ("lookups from HBM: the share of the profile's own lookups (in-sample: this plan "
                "file carries no out-of-sample estimate; re-plan to get one)")
    text = (
        "lookups from HBM: expected share of lookups of new input (not the profile's own) that "
        f"reach HBM; hot rows: {plan.hbm_share_source}"
    )
    if plan.strategies is not None:
        return text + (f"; caches (ours and stock): simulated hit rate on the "
                       f"{plan.strategies.evaluated_on}'s batches after warm-up")
    return text + "; a stock cache of clf x rows slots: as its clf x rows hottest rows (ideal)"


def _lookups_per_rank(
    module_plan: Mapping[str, ParameterSharding],
    shapes: Mapping[str, tuple[int, int]],
    lookups: Mapping[str, float],
    world: int,
) -> list[float]:
    """Spreads each part's HBM lookups over its shards in proportion to shard size."""
    per_rank = [0.0] * world
    for name, ps in module_plan.items():
        if not lookups.get(name):
            continue
        rows, dim = shapes[name]
        for rank, full_rows in shard_rows_per_rank(ps, rows, dim, world):
            share = 1.0 / world if ps.sharding_spec is None else full_rows / rows
            per_rank[rank] += lookups[name] * share
    return per_rank


def our_hbm_shares(plan: HotPlan) -> dict[str, float]:
    """Table -> share (0..1) of its lookups served from HBM under `plan` (module docstring):
    the strategy section's for the tables it chose, else the hot rows' expected share."""
    chosen = {t.table: t.hbm_hit_rate for t in plan.strategies.tables} if plan.strategies else {}
    return {tp.name: chosen.get(tp.name, tp.expected_hot_share) for tp in plan.tables}


def stock_hbm_shares(plan: HotPlan, tuned: bool = False) -> dict[str, float]:
    """Table -> share (0..1) of its lookups stock TorchRec's plan (`tuned`: its embedding
    offloading plan) serves from HBM (same definition); empty without that plan."""
    stock = plan.tuned_stock if tuned else plan.stock
    if stock is None or stock.sharding_plan is None:
        return {}
    summary = plan.strategies
    simulated = (
        {} if summary is None else summary.tuned_stock_hit_rate if tuned else summary.stock_hit_rate
    )
    return {
        tp.name: simulated.get(
            tp.name, stock.hbm_lookups.get(tp.name, 0.0) / tp.lookups if tp.lookups else 0.0
        )
        for tp in plan.tables
    }


def _our_table_row(
    tp: TablePlan, module_plan: Mapping[str, ParameterSharding], world: int, share: float
) -> TableRow:
    if tp.placement is Placement.SPLIT:
        parts = [(tp.name + HOT_SUFFIX, "hot"), (tp.name + COLD_SUFFIX, "cold")]
    else:
        parts = [(tp.name, "")]
    pss = [(module_plan[n], label) for n, label in parts]

    def joined(f) -> str:  # type: ignore[no-untyped-def]
        return " / ".join(f(ps) for ps, _ in pss)

    return TableRow(
        table=tp.name,
        rows=tp.num_embeddings,
        dim=tp.embedding_dim,
        hbm_rows=tp.hot_rows + tp.cache_rows,
        hbm_row_pct=100.0 * (tp.hot_rows + tp.cache_rows) / tp.num_embeddings,
        hbm_lookup_pct=100.0 * share,
        hbm_bytes=(tp.hot_rows + tp.cache_rows) * tp.row_bytes,
        uvm_bytes=(tp.num_embeddings - tp.hot_rows) * tp.row_bytes,
        sharding=joined(lambda ps: _SHORT.get(ps.sharding_type, ps.sharding_type)),
        kernel=joined(lambda ps: ps.compute_kernel),
        ranks=joined(lambda ps: _ranks_text(_ps_ranks(ps, world))),
    )


def _weighted(plan: HotPlan, shares: Mapping[str, float]) -> float:
    total = sum(tp.lookups for tp in plan.tables)
    return sum(shares[tp.name] * tp.lookups for tp in plan.tables) / total if total else 0.0


def _ours(plan: HotPlan, shares: Mapping[str, float]) -> PlanColumns:
    """Our plan's rows. A table's HBM lookups sit on the shards of its part in HBM: hot rows on
    the hot part (or the whole table), cache hits on the cached UVM part."""
    world = plan.world_size
    module_plan = parameter_shardings(plan.sharding_plan)
    shapes: dict[str, tuple[int, int]] = {}
    lookups: dict[str, float] = {}
    for tp in plan.tables:
        split = tp.placement is Placement.SPLIT
        hot = tp.name + HOT_SUFFIX if split else tp.name
        cold = tp.name + COLD_SUFFIX if split else tp.name
        shapes[hot] = (tp.hot_rows if split else tp.num_embeddings, tp.embedding_dim)
        shapes[cold] = (tp.num_embeddings - tp.hot_rows if split else tp.num_embeddings,
                        tp.embedding_dim)  # fmt: skip
        from_hot = tp.expected_hot_share * tp.lookups if tp.placement is not Placement.UVM else 0.0
        lookups[hot] = lookups.get(hot, 0.0) + from_hot
        lookups[cold] = lookups.get(cold, 0.0) + max(0.0, shares[tp.name] * tp.lookups - from_hot)
    per_rank = _lookups_per_rank(module_plan, shapes, lookups, world)
    return PlanColumns(
        name="torchrec-hot",
        tables=tuple(
            _our_table_row(tp, module_plan, world, shares[tp.name]) for tp in plan.tables
        ),
        ranks=tuple(
            RankRow(r, plan.hbm_bytes_per_rank[r], plan.uvm_bytes_per_rank[r], per_rank[r])
            for r in range(world)
        ),
        hbm_lookup_share=_weighted(plan, shares),
    )


def _stock(
    plan: HotPlan, stock: StockComparison | None, shares: Mapping[str, float], name: str
) -> PlanColumns | None:
    """A stock plan's rows (`name`: "stock TorchRec" or `TUNED_STOCK`)."""
    if stock is None:
        return None
    if stock.sharding_plan is None:
        return PlanColumns(name, (), (), 0.0, error=stock.error)
    world = plan.world_size
    module_plan = parameter_shardings(stock.sharding_plan)
    rows = []
    for tp in plan.tables:
        ps = module_plan[tp.name]
        frac = hbm_fraction(ps, plan.compute_device)
        total_bytes = tp.num_embeddings * tp.row_bytes
        rows.append(
            TableRow(
                table=tp.name,
                rows=tp.num_embeddings,
                dim=tp.embedding_dim,
                hbm_rows=round(frac * tp.num_embeddings),
                hbm_row_pct=100.0 * frac,
                hbm_lookup_pct=100.0 * shares[tp.name],
                hbm_bytes=round(frac * total_bytes),
                uvm_bytes=round((1 - frac) * total_bytes),
                sharding=_SHORT.get(ps.sharding_type, ps.sharding_type),
                kernel=ps.compute_kernel,
                ranks=_ranks_text(_ps_ranks(ps, world)),
            )
        )
    shapes = {tp.name: (tp.num_embeddings, tp.embedding_dim) for tp in plan.tables}
    lookups = {tp.name: shares[tp.name] * tp.lookups for tp in plan.tables}
    per_rank = _lookups_per_rank(module_plan, shapes, lookups, world)
    return PlanColumns(
        name=name,
        tables=tuple(rows),
        ranks=tuple(
            RankRow(r, stock.hbm_bytes_per_rank[r], stock.uvm_bytes_per_rank[r], per_rank[r])
            for r in range(world)
        ),
        hbm_lookup_share=_weighted(plan, shares),
    )


def _evidence(summary: StrategySummary) -> Evidence | None:
    measured = [t for t in summary.tables if t.measured_batches or t.warmup_batches]
    if not measured:  # a plan file from before the counts were recorded
        return None
    least = min(measured, key=lambda t: t.measured_batches)
    return Evidence(
        least.measured_batches,
        least.warmup_batches,
        summary.global_batch,
        least.measured_batches < MIN_EVIDENCE_BATCHES,
    )


def tuned_stock_absent(plan: HotPlan) -> str:
    """Why `plan` carries no tuned stock comparison ("" when it does)."""
    if plan.tuned_stock is not None:
        return ""
    if plan.compute_device == "cpu":
        return "CPU topology: TorchRec's embedding offloading caches rows in HBM"
    if plan.stock is None:
        return "planned without the stock comparison"
    return "this plan file predates it; re-plan to get it"


def build_report(plan: HotPlan) -> ShardingReport:
    """The report's rows for `plan` (and its stock comparison, when the plan has one)."""
    setting = Setting(plan.world_size, plan.compute_device, plan.hbm_budget_bytes,
                      plan.hbm_cap_bytes, plan.batch_size, plan.optimizer)  # fmt: skip
    ours = _ours(plan, our_hbm_shares(plan))
    stock = _stock(plan, plan.stock, stock_hbm_shares(plan), "stock TorchRec")
    tuned = _stock(plan, plan.tuned_stock, stock_hbm_shares(plan, tuned=True), TUNED_STOCK)
    summary = plan.strategies
    if summary is not None:  # ours and stock by the report's numbers: one number per plan
        hit = dict(summary.model_hit_rate)
        hit["ours"] = ours.hbm_lookup_share
        if "stock TorchRec" in hit and stock is not None and stock.error is None:
            hit["stock TorchRec"] = stock.hbm_lookup_share
        if TUNED_STOCK in hit and tuned is not None and tuned.error is None:
            hit[TUNED_STOCK] = tuned.hbm_lookup_share
        shares = {r.table: r.hbm_lookup_pct / 100.0 for r in ours.tables}
        tables = tuple(
            replace(t, hbm_hit_rate=shares.get(t.table, t.hbm_hit_rate)) for t in summary.tables
        )
        summary = replace(summary, model_hit_rate=hit, tables=tables)
    return ShardingReport(
        setting=setting,
        ours=ours,
        stock=stock,
        stock_hbm_cap=plan.stock.hbm_cap_bytes if plan.stock is not None else None,
        strategies=summary,
        modules=tuple(plan.module_paths),
        constrained=tuple(t.name for t in plan.tables if t.constrained),
        hbm_definition=hbm_definition(plan),
        evidence=_evidence(summary) if summary is not None else None,
        tuned_stock=tuned,
        tuned_stock_hbm_cap=plan.tuned_stock.hbm_cap_bytes if plan.tuned_stock else None,
        tuned_stock_absent=tuned_stock_absent(plan),
    )
