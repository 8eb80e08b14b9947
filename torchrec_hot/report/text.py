"""The sharding report as text: `format_report(build_report(plan))` (`report.rows`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torchrec_hot.planner.strategy.summary import StrategySummary
from torchrec_hot.report.rows import (
    MIN_EVIDENCE_BATCHES,
    Evidence,
    PlanColumns,
    Setting,
    ShardingReport,
)


def format_bytes(n: float) -> str:
    """Bytes in GiB / MiB / KiB with two decimals, or plain bytes below 1 KiB."""
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _title(s: Setting) -> str:
    return (
        f"{s.world_size} x {s.compute_device} ranks, HBM budget for embedding rows "
        f"{format_bytes(s.hbm_budget_bytes)} per rank (TorchRec topology hbm_cap "
        f"{format_bytes(s.hbm_cap_bytes)}), batch {s.batch_size} per rank, "
        f"optimizer {s.optimizer or 'none'}"
    )


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
    header = ["table", "rows", "dim", "HBM rows", "% rows", "% lookups from HBM", "HBM", "UVM",
              "sharding", "kernel", "ranks"]  # fmt: skip
    rows = [
        [t.table, f"{t.rows:,}", str(t.dim), f"{t.hbm_rows:,}", f"{t.hbm_row_pct:.2f}",
         f"{t.hbm_lookup_pct:.2f}", format_bytes(t.hbm_bytes), format_bytes(t.uvm_bytes),
         t.sharding, t.kernel, t.ranks]
        for t in cols.tables
    ]  # fmt: skip
    cap = f" (TorchRec topology hbm_cap {format_bytes(hbm_cap)})" if hbm_cap is not None else ""
    return f"[{cols.name}]{cap}\n" + _grid(header, rows)


def _rank_block(ours: PlanColumns, *stocks: tuple[str, PlanColumns | None]) -> str:
    """Per rank: ours, then each (column prefix, stock plan) that has a plan."""
    header = ["rank", "HBM (hot)", "UVM (cold)", "lookups from HBM"]
    shown = [(p, c) for p, c in stocks if c is not None and c.error is None]
    for prefix, _ in shown:
        header += [f"{prefix} HBM", f"{prefix} UVM", f"{prefix} lookups from HBM"]
    rows = []
    for i, r in enumerate(ours.ranks):
        row = [str(r.rank), format_bytes(r.hbm_bytes), format_bytes(r.uvm_bytes),
               f"{r.hbm_lookups:,.0f}"]  # fmt: skip
        for _, cols in shown:
            s = cols.ranks[i]
            row += [format_bytes(s.hbm_bytes), format_bytes(s.uvm_bytes), f"{s.hbm_lookups:,.0f}"]
        rows.append(row)
    title = "[per rank] lookups from HBM as defined above, at the profile's volume"
    if len(shown) > 1:
        title += "; tuned: stock TorchRec, embedding offloading"
    return title + "\n" + _grid(header, rows)


def _versus(ours: float, name: str, stock: PlanColumns) -> str:
    if stock.error is not None:
        return f"{name}: no plan fits this budget"
    share = stock.hbm_lookup_share
    ratio = f" ({ours / share:.2f}x)" if share > 0 else ""
    return f"{name} {100 * share:.2f}%{ratio}"


def tuned_summary_line(report: ShardingReport) -> str:
    """The verdict against stock TorchRec's embedding offloading (tuned stock), or why there is
    none; "" without any stock comparison."""
    if report.stock is None and report.tuned_stock is None:
        return ""
    indent = " " * len("lookups served from HBM: ")
    if report.tuned_stock is None:
        why = report.tuned_stock_absent
        return f"{indent}stock TorchRec, embedding offloading: not computed ({why})"
    ours = f"{100 * report.ours.hbm_lookup_share:.2f}%"
    versus = _versus(report.ours.hbm_lookup_share, "stock TorchRec, embedding offloading",
                     report.tuned_stock)  # fmt: skip
    return f"{indent}torchrec-hot {ours} vs {versus}"


def summary_line(report: ShardingReport) -> str:
    """The one-line verdict: lookups served from HBM, ours beside stock TorchRec's default
    plan (`tuned_summary_line`: beside its embedding offloading plan)."""
    ours = f"{100 * report.ours.hbm_lookup_share:.2f}%"
    if report.stock is None:
        return f"lookups served from HBM: torchrec-hot {ours} (stock TorchRec not planned)"
    if report.stock.error is not None:
        return (f"lookups served from HBM: torchrec-hot {ours}, "
                "stock TorchRec: no plan fits this budget")  # fmt: skip
    stock = report.stock.hbm_lookup_share
    ratio = f" ({report.ours.hbm_lookup_share / stock:.2f}x)" if stock > 0 else ""
    return (f"lookups served from HBM: torchrec-hot {ours} vs stock TorchRec "
            f"{100 * stock:.2f}%{ratio}")  # fmt: skip


def format_report(report: ShardingReport) -> str:
    """The report as text: what "from HBM" means, tables of both plans, per-rank totals, one
    summary line, then the strategy section when the plan chose strategies."""
    parts = [f"torchrec-hot sharding report: {_title(report.setting)}", report.hbm_definition]
    if len(report.modules) > 1:
        parts.append("modules (one budget): " + ", ".join(m or "<root>" for m in report.modules))
    if report.constrained:
        parts.append(
            "placed as your ParameterConstraints say: " + ", ".join(report.constrained)
        )
    parts.append(_table_block(report.ours))
    if report.stock is not None:
        parts.append(_table_block(report.stock, report.stock_hbm_cap))
    if report.tuned_stock is not None:
        parts.append(_table_block(report.tuned_stock, report.tuned_stock_hbm_cap))
    parts.append(_rank_block(report.ours, ("stock", report.stock),
                             ("tuned", report.tuned_stock)))  # fmt: skip
    parts.append("\n".join(filter(None, [summary_line(report), tuned_summary_line(report)])))
    if report.strategies is not None:
        parts.append(_strategy_block(report.strategies, report.evidence))
    return "\n\n".join(parts)


def evidence_text(evidence: Evidence | None) -> str:
    """How many held-out batches the choices rest on, with a warning when they are too few."""
    if evidence is None:
        return ""
    text = (
        f"; each choice measured on {evidence.measured} held-out global batch(es) of "
        f"{evidence.global_batch:,} samples after {evidence.warmup} warm-up batch(es)"
    )
    if evidence.too_few:
        text += (
            f"\nWARNING: only {evidence.measured} held-out global batch(es) measured (fewer than "
            f"{MIN_EVIDENCE_BATCHES}): the choices rest on little evidence; record a longer "
            "trace (profile --trace-ids) or plan with a smaller --batch-size"
        )
    return text


def _strategy_block(summary: StrategySummary, evidence: Evidence | None) -> str:
    """Per table: chosen strategy, runner-up and why; then the whole model's modeled time."""
    header = ["table", "strategy", "HBM rows", "ms/step", "runner-up", "its ms/step",
              "from HBM %", "host link/step", "batches"]
    rows = [
        [t.table, t.strategy, f"{t.hbm_rows:,}", f"{t.modeled_ms:.4f}", t.runner_up or "-",
         f"{t.runner_up_ms:.4f}" if t.runner_up else "-", f"{100 * t.hbm_hit_rate:.2f}",
         format_bytes(t.host_link_bytes), str(t.measured_batches) if t.measured_batches else "-"]
        for t in summary.tables
    ]
    ours = summary.model_ms.get("ours")
    model_rows = [  # NaN: not compared (stock without its comparison) or no plan
        [name, "-", "-", "-", "-"] if math.isnan(ms) else
        [name, f"{ms:.4f}", f"{ms / ours:.2f}x" if ours else "-",
         f"{100 * summary.model_hit_rate.get(name, float('nan')):.2f}",
         format_bytes(summary.model_link_bytes.get(name, 0.0))]
        for name, ms in summary.model_ms.items()
    ]  # fmt: skip
    model = _grid(["plan", "ms/step", "vs ours", "from HBM %", "host link/step"], model_rows)
    notes = "".join(f"\n  {n}" for n in summary.notes)
    return (
        f"[strategy per table] cost model {summary.hardware}, look-ahead {summary.lookahead} "
        f"batch(es), evaluated on the {summary.evaluated_on}{evidence_text(evidence)}\n"
        "ms/step is modeled embedding time per step and rank; from HBM % as defined above (a "
        "cache's fill is in host link/step); batches: held-out global batches measured\n"
        + _grid(header, rows)
        + "\n\n[modeled embedding time per step, whole model]\n"
        + model
        + notes
    )
