"""Sharding report: what a plan puts where, beside what stock TorchRec would do.

`build_report(plan)` computes the rows as data (a pure function of the `HotPlan`, which carries
the stock comparison); `format_report(report)` turns them into text. Bytes are weights plus
optimizer state; "lookups from HBM" are the profile's lookups that the plan serves from HBM
(for stock `fused_uvm_caching` tables: the best case of a cache of `clf * rows` rows).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from torchrec.distributed.types import ParameterSharding

from torchrec_hot.planner.hot_plan import HotPlan, TablePlan
from torchrec_hot.planner.plan_io import parameter_shardings, shard_rows_per_rank
from torchrec_hot.planner.stock import hbm_fraction
from torchrec_hot.planner.strategy.summary import StrategySummary
from torchrec_hot.tables.split import COLD_SUFFIX, HOT_SUFFIX, Placement


@dataclass(frozen=True)
class TableRow:
    """One logical table under one plan. `hbm_rows`: rows in HBM (hot rows, or a stock
    cache's `clf * rows`); percentages are 0..100."""

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
    """Totals of one rank under one plan: bytes and expected lookups served from HBM."""

    rank: int
    hbm_bytes: int
    uvm_bytes: int
    hbm_lookups: float


@dataclass(frozen=True)
class PlanColumns:
    """All rows of one plan (ours or stock); `error` set when TorchRec found no plan."""

    name: str
    tables: tuple[TableRow, ...]
    ranks: tuple[RankRow, ...]
    hbm_lookup_share: float
    error: str | None = None


@dataclass(frozen=True)
class ShardingReport:
    title: str
    ours: PlanColumns
    stock: PlanColumns | None
    stock_hbm_cap: int | None
    modules: tuple[str, ...] = ()
    constrained: tuple[str, ...] = ()
    strategies: StrategySummary | None = None


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


def _lookups_per_rank(
    module_plan: Mapping[str, ParameterSharding],
    shapes: Mapping[str, tuple[int, int]],
    lookups: Mapping[str, float],
    world: int,
) -> list[float]:
    """Spreads each table's HBM lookups over its shards in proportion to shard size."""
    per_rank = [0.0] * world
    for name, ps in module_plan.items():
        if not lookups.get(name):
            continue
        rows, dim = shapes[name]
        for rank, full_rows in shard_rows_per_rank(ps, rows, dim, world):
            share = 1.0 / world if ps.sharding_spec is None else full_rows / rows
            per_rank[rank] += lookups[name] * share
    return per_rank


def _our_table_row(
    tp: TablePlan,
    module_plan: Mapping[str, ParameterSharding],
    world: int,
    cache_hit_rate: float | None = None,
) -> TableRow:
    """`cache_hit_rate`: for a table with a UVM cache, the simulated share of its lookups served
    from HBM (hot rows + cache), which the profile's counts cannot say."""
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
        hbm_lookup_pct=100.0 * (
            cache_hit_rate if tp.cache_rows and cache_hit_rate is not None
            else tp.hot_lookup_share
        ),
        hbm_bytes=(tp.hot_rows + tp.cache_rows) * tp.row_bytes,
        uvm_bytes=(tp.num_embeddings - tp.hot_rows) * tp.row_bytes,
        sharding=joined(lambda ps: _SHORT.get(ps.sharding_type, ps.sharding_type)),
        kernel=joined(lambda ps: ps.compute_kernel),
        ranks=joined(lambda ps: _ranks_text(_ps_ranks(ps, world))),
    )


def _ours(plan: HotPlan) -> PlanColumns:
    world = plan.world_size
    module_plan = parameter_shardings(plan.sharding_plan)
    shapes: dict[str, tuple[int, int]] = {}
    lookups: dict[str, float] = {}
    for tp in plan.tables:
        hot = tp.name + HOT_SUFFIX if tp.placement is Placement.SPLIT else tp.name
        shapes[hot] = (
            tp.hot_rows if tp.placement is Placement.SPLIT else tp.num_embeddings,
            tp.embedding_dim,
        )
        lookups[hot] = float(tp.hot_lookups) if tp.placement is not Placement.UVM else 0.0
    per_rank = _lookups_per_rank(module_plan, shapes, lookups, world)
    hit = {t.table: t.hbm_hit_rate for t in plan.strategies.tables} if plan.strategies else {}
    return PlanColumns(
        name="torchrec-hot",
        tables=tuple(
            _our_table_row(tp, module_plan, world, hit.get(tp.name)) for tp in plan.tables
        ),
        ranks=tuple(
            RankRow(r, plan.hbm_bytes_per_rank[r], plan.uvm_bytes_per_rank[r], per_rank[r])
            for r in range(world)
        ),
        hbm_lookup_share=plan.hot_lookup_share,
    )


def _stock(plan: HotPlan) -> PlanColumns | None:
    stock = plan.stock
    if stock is None:
        return None
    if stock.sharding_plan is None:
        return PlanColumns("stock TorchRec", (), (), 0.0, error=stock.error)
    world = plan.world_size
    module_plan = parameter_shardings(stock.sharding_plan)
    rows = []
    for tp in plan.tables:
        ps = module_plan[tp.name]
        frac = hbm_fraction(ps, plan.compute_device)
        hbm_rows = round(frac * tp.num_embeddings)
        total_bytes = tp.num_embeddings * tp.row_bytes
        rows.append(
            TableRow(
                table=tp.name,
                rows=tp.num_embeddings,
                dim=tp.embedding_dim,
                hbm_rows=hbm_rows,
                hbm_row_pct=100.0 * frac,
                hbm_lookup_pct=100.0 * stock.hbm_lookups[tp.name] / tp.lookups
                if tp.lookups
                else 0.0,
                hbm_bytes=round(frac * total_bytes),
                uvm_bytes=round((1 - frac) * total_bytes),
                sharding=_SHORT.get(ps.sharding_type, ps.sharding_type),
                kernel=ps.compute_kernel,
                ranks=_ranks_text(_ps_ranks(ps, world)),
            )
        )
    shapes = {tp.name: (tp.num_embeddings, tp.embedding_dim) for tp in plan.tables}
    per_rank = _lookups_per_rank(module_plan, shapes, stock.hbm_lookups, world)
    total = sum(tp.lookups for tp in plan.tables)
    return PlanColumns(
        name="stock TorchRec",
        tables=tuple(rows),
        ranks=tuple(
            RankRow(r, stock.hbm_bytes_per_rank[r], stock.uvm_bytes_per_rank[r], per_rank[r])
            for r in range(world)
        ),
        hbm_lookup_share=sum(stock.hbm_lookups.values()) / total if total else 0.0,
    )


def build_report(plan: HotPlan) -> ShardingReport:
    """The report's rows for `plan` (and its stock comparison, when the plan has one)."""
    title = (
        f"{plan.world_size} x {plan.compute_device} ranks, HBM budget for embedding rows "
        f"{_bytes(plan.hbm_budget_bytes)} per rank (TorchRec topology hbm_cap "
        f"{_bytes(plan.hbm_cap_bytes)}), batch {plan.batch_size} per rank, "
        f"optimizer {plan.optimizer or 'none'}"
    )
    stock_cap = plan.stock.hbm_cap_bytes if plan.stock is not None else None
    return ShardingReport(
        title=title,
        ours=_ours(plan),
        stock=_stock(plan),
        stock_hbm_cap=stock_cap,
        strategies=plan.strategies,
        modules=tuple(plan.module_paths),
        constrained=tuple(t.name for t in plan.tables if t.constrained),
    )


# ---- formatting -------------------------------------------------------------------------
def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _grid(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i not in (0,) else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _table_block(cols: PlanColumns, hbm_cap: int | None = None) -> str:
    if cols.error is not None:
        return f"[{cols.name}] no plan: TorchRec's planner found none.\nTorchRec said: {cols.error}"
    header = [
        "table",
        "rows",
        "dim",
        "HBM rows",
        "% rows",
        "% lookups",
        "HBM",
        "UVM",
        "sharding",
        "kernel",
        "ranks",
    ]
    rows = [
        [
            t.table,
            f"{t.rows:,}",
            str(t.dim),
            f"{t.hbm_rows:,}",
            f"{t.hbm_row_pct:.2f}",
            f"{t.hbm_lookup_pct:.2f}",
            _bytes(t.hbm_bytes),
            _bytes(t.uvm_bytes),
            t.sharding,
            t.kernel,
            t.ranks,
        ]
        for t in cols.tables
    ]
    cap = f" (TorchRec topology hbm_cap {_bytes(hbm_cap)})" if hbm_cap is not None else ""
    return f"[{cols.name}]{cap}\n" + _grid(header, rows)


def _rank_block(ours: PlanColumns, stock: PlanColumns | None) -> str:
    header = ["rank", "HBM (hot)", "UVM (cold)", "lookups from HBM"]
    with_stock = stock is not None and stock.error is None
    if with_stock:
        header += ["stock HBM", "stock UVM", "stock lookups from HBM"]
    rows = []
    for i, r in enumerate(ours.ranks):
        row = [str(r.rank), _bytes(r.hbm_bytes), _bytes(r.uvm_bytes), f"{r.hbm_lookups:,.0f}"]
        if with_stock:
            s = stock.ranks[i]  # type: ignore[union-attr]
            row += [_bytes(s.hbm_bytes), _bytes(s.uvm_bytes), f"{s.hbm_lookups:,.0f}"]
        rows.append(row)
    return "[per rank]\n" + _grid(header, rows)


def format_report(report: ShardingReport) -> str:
    """The report as text: tables of both plans, per-rank totals, one summary line."""
    parts = [f"torchrec-hot sharding report: {report.title}"]
    if len(report.modules) > 1:
        parts.append("modules (one budget): " + ", ".join(m or "<root>" for m in report.modules))
    if report.constrained:
        parts.append(
            "placed as your ParameterConstraints say: " + ", ".join(report.constrained)
        )
    parts.append(_table_block(report.ours))
    if report.stock is not None:
        parts.append(_table_block(report.stock, report.stock_hbm_cap))
    parts.append(_rank_block(report.ours, report.stock))
    ours = f"{100 * report.ours.hbm_lookup_share:.2f}%"
    if report.stock is None:
        summary = f"lookups served from HBM: torchrec-hot {ours} (stock TorchRec not planned)"
    elif report.stock.error is not None:
        summary = (
            f"lookups served from HBM: torchrec-hot {ours}, "
            "stock TorchRec: no plan fits this budget"
        )
    else:
        stock = report.stock.hbm_lookup_share
        ratio = f" ({report.ours.hbm_lookup_share / stock:.2f}x)" if stock > 0 else ""
        summary = (
            f"lookups served from HBM: torchrec-hot {ours} vs stock TorchRec "
            f"{100 * stock:.2f}%{ratio}"
        )
    parts.append(summary)
    if report.strategies is not None:
        parts.append(_strategy_block(report.strategies))
    return "\n\n".join(parts)


def _strategy_block(summary: StrategySummary) -> str:
    """Per table: chosen strategy, runner-up and why; then the whole model's modeled time."""
    header = ["table", "strategy", "HBM rows", "ms/step", "runner-up", "its ms/step",
              "from HBM %", "host link/step"]
    rows = [
        [t.table, t.strategy, f"{t.hbm_rows:,}", f"{t.modeled_ms:.4f}", t.runner_up or "-",
         f"{t.runner_up_ms:.4f}" if t.runner_up else "-", f"{100 * t.hbm_hit_rate:.2f}",
         _bytes(t.host_link_bytes)]
        for t in summary.tables
    ]
    ours = summary.model_ms.get("ours")
    model_rows = [  # NaN: not compared (stock without its comparison) or no plan
        [name, "-", "-", "-", "-"] if math.isnan(ms) else
        [name, f"{ms:.4f}", f"{ms / ours:.2f}x" if ours else "-",
         f"{100 * summary.model_hit_rate.get(name, float('nan')):.2f}",
         _bytes(summary.model_link_bytes.get(name, 0.0))]
        for name, ms in summary.model_ms.items()
    ]  # fmt: skip
    model = _grid(["plan", "ms/step", "vs ours", "from HBM %", "host link/step"], model_rows)
    notes = "".join(f"\n  {n}" for n in summary.notes)
    return (
        f"[strategy per table] cost model {summary.hardware}, look-ahead {summary.lookahead} "
        f"batch(es), evaluated on the {summary.evaluated_on}; ms/step is modeled embedding "
        "time per step and rank; from HBM %: lookups read from HBM (for a cache, after its "
        "fill: the fill's transfer is in host link/step)\n"
        + _grid(header, rows)
        + "\n\n[modeled embedding time per step, whole model]\n"
        + model
        + notes
    )
