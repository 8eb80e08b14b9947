"""Tables, bar checks and the figure of `bench_planner.py` (formatting only, no measuring)."""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path
from typing import Any

from bench_planner_tables import honest_sections

# StrategySummary keys, in column order, with short labels
STRATEGIES: tuple[tuple[str, str], ...] = (
    ("ours", "ours"),
    ("all static (FAE)", "static"),
    ("all lru cache", "LRU"),
    ("all look-forward", "look-fwd"),
    ("stock TorchRec", "stock"),
    ("stock TorchRec, embedding offloading", "tuned stock"),
    ("all HBM (limit)", "all-HBM"),
)
TUNED = "stock TorchRec, embedding offloading"
SINGLE = ("all static (FAE)", "all lru cache", "all look-forward")
SHORT_DATASET = {"criteo-kaggle": "Kaggle", "criteo-terabyte": "Terabyte"}


def _ms(v: float) -> str:
    return "no plan" if math.isnan(v) else f"{v:.3f}"


def _ratio(a: float, b: float) -> str:
    return "-" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}x"


def best_single(r: dict[str, Any]) -> tuple[str, float]:
    name = min(SINGLE, key=lambda k: r["ms"][k])
    return name, r["ms"][name]


def time_table(rows: list[dict[str, Any]]) -> str:
    head = [label for _, label in STRATEGIES]
    lines = [
        "| data | workload | budget | " + " | ".join(head) + " | ours / all-HBM | stock / ours"
        " | ours / tuned stock | best single / ours | chosen (tables) "
        "| plan() s: total / evaluate / stock / tuned |",
        "|" + "---|" * (3 + len(head) + 6),
    ]  # fmt: skip
    for r in rows:
        ms = r["ms"]
        _, single = best_single(r)
        picks = sorted(r["chosen"].items(), key=lambda kv: -kv[1])
        chosen = ", ".join(f"{k} {v}" for k, v in picks)
        sec = r["seconds"]
        cells = [f"**{_ms(ms['ours'])}**"] + [_ms(ms[k]) for k, _ in STRATEGIES[1:]]
        lines.append(
            f"| {SHORT_DATASET.get(r['dataset'], r['dataset'])} | {r['workload']} "
            f"| {r['budget']:.0%} | " + " | ".join(cells)
            + f" | {_ratio(ms['ours'], ms['all HBM (limit)'])}"
            f" | {_ratio(ms['stock TorchRec'], ms['ours'])}"
            f" | {_ratio(ms['ours'], ms.get(TUNED, math.nan))} | {_ratio(single, ms['ours'])}"
            f" | {chosen} | {sec['total']:.0f} / {sec.get('evaluate', 0.0):.0f} / "
            f"{sec.get('stock', 0.0):.0f} / {sec.get('tuned', 0.0):.0f} |"
        )  # fmt: skip
    return "\n".join(lines)


def traffic_table(rows: list[dict[str, Any]]) -> str:
    head = [label for _, label in STRATEGIES]
    lines = [
        "| data | workload | budget | " + " | ".join(head) + " |",
        "|" + "---|" * (3 + len(head)),
    ]
    for r in rows:
        cells = []
        for key, _ in STRATEGIES:
            hit, link = r["hit"].get(key, math.nan), r["link_per_sample"].get(key, math.nan)
            cells.append("-" if math.isnan(hit) else f"{hit:.1%} / {link:,.0f}")
        lines.append(
            f"| {SHORT_DATASET.get(r['dataset'], r['dataset'])} | {r['workload']} "
            f"| {r['budget']:.0%} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def stock_errors(rows: list[dict[str, Any]]) -> list[str]:
    """Where stock TorchRec found no plan, the start of its error (one line per case)."""
    failed = [r for r in rows if r.get("stock_error")]
    if not failed:
        return []
    lines = ["Stock TorchRec found no plan:", ""]
    for r in failed:
        lines.append(f"- {SHORT_DATASET.get(r['dataset'])} {r['workload']} {r['budget']:.0%}: "
                     f"{first_line(r['stock_error'])}")  # fmt: skip
    return [*lines, ""]


def first_line(error: str) -> str:
    """A planner error in one line: TorchRec's storage totals when it gives them (HBM needed
    vs available, all ranks), else the first line, at most 160 characters."""
    need = re.search(r"requirement for model parallel: Storage\(hbm = ([\d.]+) GB", error)
    have = re.search(r"available for model parallel: Storage\(hbm = ([\d.]+) GB", error)
    if need and have:
        return (f"insufficient storage: needs {need[1]} GB of HBM in all (rows and I/O buffers), "
                f"{have[1]} GB available")  # fmt: skip
    return error.strip().splitlines()[0][:160]


def device_hbm_lines(results: dict[str, Any]) -> list[str]:
    """Ours vs stock when 1% of the tables' bytes is the device's whole usable HBM."""
    device_rows = results.get("device_rows") or []
    if not device_rows:
        return []

    def outcome(error: str | None, ms: float | None) -> str:
        return f"plan, {ms:.3f} ms" if error is None else "no plan: " + first_line(error)

    lines = [
        "Same device for both: the 1% budget as each rank's whole usable HBM (HBM x 0.85 after "
        "TorchRec's reservation), TorchRec's I/O buffers included (zipf-1.05). Stock's column "
        "is the issue's measured fact (stock given the row budget as its HBM finds no plan); "
        "ours, given the same device, finds none either: the pooled-output buffers TorchRec "
        "charges at batch 8192 per rank exceed the whole 1% before any row is placed. Our "
        "planner's 1% plans above take the budget for rows and TorchRec's I/O buffers on top:",
        "",
        "| data | usable HBM per rank | ours | stock |",
        "|---|---|---|---|",
    ]
    for r in device_rows:
        lines.append(
            f"| {SHORT_DATASET.get(r['dataset'])} | {r['budget_per_rank'] / 2**20:,.0f} MiB | "
            f"{outcome(r['ours_error'], r.get('ours_ms'))} | "
            f"{outcome(r['stock_error'], None) if r['stock_error'] else 'plan'} |"
        )
    return [*lines, ""]


def bar_checks(results: dict[str, Any]) -> list[str]:
    """One line per bar of issue 5, pass/fail from the rows."""
    rows = results["rows"]
    out = []
    worse = [r for r in rows if r["ms"]["ours"] > best_single(r)[1] * (1 + 1e-9)]
    out.append(
        f"- ours <= best single strategy on every workload and budget: "
        f"{'PASS' if not worse else 'FAIL'} ({len(rows) - len(worse)}/{len(rows)}"
        + ("" if not worse else "; fails: " + ", ".join(
            f"{r['dataset']} {r['workload']} {r['budget']:.0%}" for r in worse)) + ")"
    )  # fmt: skip
    at5 = [r for r in rows if math.isclose(r["budget"], 0.05)]
    ratios = [(r, r["ms"]["stock TorchRec"] / r["ms"]["ours"]) for r in at5]
    low = [(r, x) for r, x in ratios if not math.isnan(x) and x < 5.0]
    out.append(
        f"- >= 5x better than stock at 5%: {'PASS' if not low else 'FAIL'} "
        f"(stock / ours at 5%: {', '.join(f'{x:.1f}x' for _, x in ratios)}"
        + ("" if not low else "; below 5x: " + ", ".join(
            f"{r['dataset']} {r['workload']} {x:.2f}x" for r, x in low)) + ")"
    )  # fmt: skip
    at1 = [r for r in rows if math.isclose(r["budget"], 0.01)]
    no_stock = [r for r in at1 if math.isnan(r["ms"]["stock TorchRec"])]
    out.append(
        f"- a plan at 1% where stock finds none: ours planned {len(at1)}/{len(at1)}; stock found "
        f"no plan in {len(no_stock)}/{len(at1)} with the I/O allowance on top of the budget"
        + ("" if len(no_stock) == len(at1) else " (stock planned: " + ", ".join(
            f"{r['dataset']} {r['workload']}" for r in at1 if r not in no_stock) + ")")
    )  # fmt: skip
    device_rows = results.get("device_rows") or []
    if device_rows:
        stock_none = sum(bool(r["stock_error"]) for r in device_rows)
        ours = sum(r["ours_error"] is None for r in device_rows)
        out.append(
            f"- with 1% as the whole device HBM (I/O buffers inside it): ours planned {ours}/"
            f"{len(device_rows)}, stock {len(device_rows) - stock_none}/{len(device_rows)}"
        )
    zipf5 = [r for r in at5 if r["workload"].startswith("zipf")]
    far = [r for r in zipf5 if r["ms"]["ours"] > 1.25 * r["ms"]["all HBM (limit)"]]
    out.append(
        f"- within 1.25x of all-HBM at 5% for both Zipf exponents: "
        f"{'PASS' if not far else 'FAIL'} ("
        + ", ".join(f"{SHORT_DATASET.get(r['dataset'])} {r['workload']} "
                    f"{r['ms']['ours'] / r['ms']['all HBM (limit)']:.2f}x" for r in zipf5) + ")"
    )  # fmt: skip
    tb = [r for r in rows if r["dataset"] == "criteo-terabyte"]
    if tb:
        worst = max(r["seconds"]["total"] for r in tb)
        worst_ns = max(r["seconds"]["total"] - r["seconds"].get("stock", 0.0)
                       - r["seconds"].get("tuned", 0.0) for r in tb)  # fmt: skip
        evaluate = max(r["seconds"].get("evaluate", 0.0) for r in tb)
        cpu = max(r["seconds"].get("cpu", math.nan) for r in tb)
        ok = worst_ns < 60
        out.append(
            f"- planning the Terabyte workload for 8 ranks under 60 s: {'PASS' if ok else 'FAIL'}"
            f" (slowest plan() {worst:.0f} s with both stock comparisons, {worst_ns:.0f} s "
            f"without them; of that, the strategy evaluation up to {evaluate:.0f} s; CPU time "
            f"of the slowest plan() with both comparisons {cpu:.0f} s, all threads)"
        )
    return out


def markdown(results: dict[str, Any], machine_line: str, command: str) -> str:
    args, rows = results["args"], results["rows"]
    datasets = sorted({r["dataset"] for r in rows})
    lines = [
        "## Planner: per-table strategies vs single strategies, stock TorchRec, all-HBM "
        "(bench_planner.py)",
        "",
        *([] if results.get("complete", True) else [
            "**Partial results: the run has not finished.**", ""]),
        f"Command: `{command}` ({results['wall_s'] / 60:.1f} min, peak RSS "
        f"{results['peak_rss_gib']:.1f} GiB). Date: {date.today().isoformat()}. "
        f"Machine: {machine_line}.",
        "",
        f"Modeled, not run: {', '.join(datasets)} tables (scale "
        f"{args['scale'] if args['quick'] else 1.0}), dim 128, 8 H100-like ranks "
        "(`make_topology(8, \"cuda\")`, HBM 3.35 TB/s, PCIe 64 GB/s), batch 8192 per rank, "
        "row-wise Adagrad; HBM budget = share of all tables' bytes (rows x 516 B), split "
        f"evenly over the ranks. Profile: {args['profile_batches']} global batches (65,536 "
        f"samples each) of window 0; strategies measured on {args['holdout_batches']} "
        "held-out global batches of window 1 (the first quarter only warms the caches). "
        "Workloads: zipf-1.05 / zipf-1.2 all tables stable; drift and session: Zipf 1.05, "
        "the 5 largest tables drift (new hot ids in window 1) or draw from a turning-over "
        "pool of active ids.",
        "",
        "Modeled embedding ms per step per rank (`StrategySummary.model_ms`; single "
        "strategies may keep a table whole in HBM or UVM; `no plan`: TorchRec found none):",
        "",
        time_table(rows),
        "",
        "HBM hit rate / host-link bytes per sample (per training sample, all ranks). For "
        "caches and look-forward a lookup whose row was first filled into HBM counts as served "
        "from HBM; the fill (and write-back) bytes are in the host-link column, on the critical "
        "path for LRU/LFU and in the background for look-forward. Stock TorchRec plans the "
        "unsplit tables against the same row budget plus the I/O-buffer allowance HotPlanner "
        "gives itself (`HotPlanner._stock_topology`):",
        "",
        traffic_table(rows),
        "",
        *stock_errors(rows),
        *device_hbm_lines(results),
        "Bars of issue 5:",
        "",
        *bar_checks(results),
        "",
        *honest_sections(results),
        *(["Notes (added to the results file after the run):", "",
           *[f"- {n}" for n in results["notes"]], ""] if results.get("notes") else []),
        "![modeled ms per step](bench_planner.png)",
    ]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["dataset"], r["workload"]) for r in rows},
                    key=lambda p: (p[0], [r["workload"] for r in rows].index(p[1])))  # fmt: skip
    cols = min(4, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax, (dataset, workload) in zip(axes.flat, panels, strict=False):
        mine = sorted((r for r in rows if (r["dataset"], r["workload"]) == (dataset, workload)),
                      key=lambda r: r["budget"])  # fmt: skip
        x = [100 * r["budget"] for r in mine]
        for key, label in STRATEGIES:  # ours on top: it often equals look-forward / all-HBM
            y = [r["ms"].get(key, math.nan) for r in mine]
            style = {
                "ours": {"color": "black", "linewidth": 1.5, "marker": "s", "zorder": 5,
                         "markerfacecolor": "none", "markersize": 9},
                "all HBM (limit)": {"color": "grey", "linestyle": "--", "marker": "."},
            }.get(key, {"marker": "o"})  # fmt: skip
            ax.plot(x, y, label=label, **style)
        ax.set(xscale="log", yscale="log", xlabel="HBM budget (% of table bytes)",
               ylabel="modeled embedding ms / step",
               title=f"{SHORT_DATASET.get(dataset, dataset)} {workload}")  # fmt: skip
        ax.set_xticks(x, [f"{v:g}%" for v in x])
        ax.minorticks_off()
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
