"""Results of `bench_module.py`: per-case medians, ratio and breakdown tables, plot, doc.

`finish` turns each case's per-step stage times into medians (per step the slowest rank) and
ratios; the table / plot / doc functions only format those numbers.
"""

from __future__ import annotations

import statistics
from pathlib import Path

STAGES = ("validate", "remap", "inner", "merge", "backward")
RATIO_CELL = "wall-time ratio / CPU-time ratio (hot/cold ms / stock ms, wall, median)"


def summarize(steps_per_rank: list[dict]) -> dict:
    """Median over steps of each stage (ms); per step the slowest rank's values."""
    out = {}
    for name in ("stock", "hc"):
        per_step = zip(*(r[name] for r in steps_per_rank), strict=True)
        rows = [max(ranks, key=lambda s: s["step"]) for ranks in per_step]
        med = {k: 1e3 * statistics.median(r.get(k, 0.0) for r in rows) for k in rows[0]}
        med["backward"] = 1e3 * statistics.median(r["step"] - r["forward"] for r in rows)
        if name == "hc":  # the sum on the rank (presum) runs inside the inner module
            med["remap"] = 1e3 * statistics.median(r["remap"] - r["validate"] for r in rows)
            med["inner"] = 1e3 * statistics.median(
                r.get("inner", 0.0) - r.get("presum", 0.0) for r in rows
            )
            med["merge"] = 1e3 * statistics.median(
                r["forward"] - r["remap"] - r.get("inner", 0.0) + r.get("presum", 0.0)
                for r in rows
            )
            if "merge_bwd" in rows[0] or "presum_bwd" in rows[0]:
                med["merge_bwd"] = 1e3 * statistics.median(
                    r.get("merge_bwd", 0.0) + r.get("presum_bwd", 0.0) for r in rows
                )
        out[name] = med
    return out


def finish(cases: list[dict], mode: str) -> list[dict]:
    for c in cases:
        steps = c.pop("steps")
        c.update(mode=mode, **summarize(steps if isinstance(steps, list) else [steps]))
        c["ratio"] = c["hc"]["step"] / c["stock"]["step"]
        c["cpu_ratio"] = c["hc"]["cpu"] / c["stock"]["cpu"]
        ours = sum(c["hc"].get(k, 0.0) for k in ("validate", "remap", "merge", "merge_bwd"))
        if "inner" in c["stock"]:  # unsharded: the concatenation stock's forward does as well
            ours -= min(c["hc"]["merge"], c["stock"]["forward"] - c["stock"]["inner"])
        c["ours_pct"] = 100 * ours / c["stock"]["step"]
    return cases


def ratio_table(cases: list[dict], batch_sizes: list[int]) -> str:
    lines = ["| mode | hot share (measured) | " + " | ".join(f"B={b}" for b in batch_sizes) + " |"]
    lines.append("|" + "---|" * (2 + len(batch_sizes)))
    for mode, share in sorted({(c["mode"], c["share"]) for c in cases}):
        row = {c["batch"]: c for c in cases if c["mode"] == mode and c["share"] == share}
        measured = statistics.mean(c["measured_share"] for c in row.values())
        cells = [
            f"**{c['ratio']:.2f}x** / {c['cpu_ratio']:.2f}x "
            f"({c['hc']['step']:.1f} / {c['stock']['step']:.1f})"
            if (c := row.get(b))
            else "-"
            for b in batch_sizes
        ]
        lines.append(f"| {mode} | {share:.0%} ({measured:.1%}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(cases: list[dict]) -> str:
    cols = (
        "stock fwd | stock bwd | validate | remap | inner split-EBC | merge | hot/cold bwd "
        "| of it merge bwd"
    )
    lines = [f"| mode | share | B | {cols} | ours / stock step |", "|" + "---|" * 12]
    for c in cases:
        s, h = c["stock"], c["hc"]
        vals = [s["forward"], s["backward"]] + [h[k] for k in STAGES]
        cells = " | ".join(f"{v:.1f}" for v in vals)
        cells += f" | {h['merge_bwd']:.1f}" if "merge_bwd" in h else " | -"
        lines.append(
            f"| {c['mode']} | {c['share']:.0%} | {c['batch']} | {cells} | {c['ours_pct']:.1f}% |"
        )
    return "\n".join(lines)


def plot(cases: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes, batches = sorted({c["mode"] for c in cases}), sorted({c["batch"] for c in cases})
    cols = min(2, len(modes))
    rows = -(-len(modes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
    for ax, mode in zip(axes.flat, modes, strict=False):
        for share in sorted({c["share"] for c in cases}):
            pts = sorted(
                (c["batch"], c["ratio"]) for c in cases if (c["mode"], c["share"]) == (mode, share)
            )
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{share:.0%} hot")
        ax.axhline(1.15, color="grey", linestyle="--", linewidth=1, label="1.15x bar")
        ax.set(xscale="log", xlabel="per-rank batch size", ylabel="hot/cold / stock step")
        ax.set(title=mode, ylim=(0, None))
        ax.minorticks_off()
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.legend(fontsize=7, ncol=2)
    for ax in list(axes.flat)[len(modes) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


