"""Coverage curves: share of lookups served by the most looked-up share of rows (log x).

Per table, up to three curves: the profiling window ranked by itself, the held-out window ranked
by itself (the best any hot set could do there), and the held-out window ranked by the
profiling window (what a plan made from the profile gets there: the gap to the held-out curve
is drift). `coverage_curve` computes, `plot_coverage` draws (matplotlib, Agg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from torchrec_hot.profiling.profile import PopularityProfile, WindowSelector

CURVE_POINTS = 400


def coverage_curve(
    rank_counts: np.ndarray, eval_counts: np.ndarray | None = None, points: int = CURVE_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """(share of rows, share of lookups) at ~`points` log-spaced hot sizes: rows ranked by
    `rank_counts` (ties by id), lookups counted in `eval_counts` (default the same)."""
    evals = rank_counts if eval_counts is None else eval_counts
    n = rank_counts.shape[0]
    total = float(evals.sum())
    ks = np.unique(np.geomspace(1, max(n, 1), points).astype(np.int64))
    if total == 0 or n == 0:
        return ks / max(n, 1), np.zeros(ks.shape)
    order = np.argsort(-rank_counts, kind="stable")
    cum = np.cumsum(evals[order], dtype=np.float64)
    return ks / n, cum[ks - 1] / total


def plot_coverage(
    profile: PopularityProfile,
    out_dir: str | Path,
    holdout: PopularityProfile | None = None,
    window: WindowSelector = None,
    holdout_window: WindowSelector = None,
    tables: Sequence[str] | None = None,
) -> list[Path]:
    """Writes `<table>.png` per table and `coverage_all.png` (a grid of all) under `out_dir`;
    returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(tables) if tables else [t.name for t in profile.tables]
    curves = {name: _curves(profile, holdout, name, window, holdout_window) for name in names}
    paths = []
    for name, series in curves.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        _draw(ax, name, profile.table(name).num_embeddings, series, legend=True)
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows), squeeze=False)
    for ax, (name, series) in zip(axes.flat, curves.items(), strict=False):
        _draw(ax, name, profile.table(name).num_embeddings, series, legend=False)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.04 if rows > 1 else 0.1, 1, 1))
    path = out / "coverage_all.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)
    return paths


def _curves(profile, holdout, name, window, holdout_window) -> list[tuple[str, str, tuple]]:
    counts = profile.counts(name, window)
    series = [("profile window", "-", coverage_curve(counts))]
    if holdout is not None:
        held = holdout.counts(name, holdout_window)
        series.append(("held-out window (own best rows)", "--", coverage_curve(held)))
        series.append(("held-out, profile's hot rows", ":", coverage_curve(counts, held)))
    return series


def _draw(ax, name: str, rows: int, series, legend: bool) -> None:
    for label, style, (x, y) in series:
        ax.plot(x * 100, y * 100, style, label=label, linewidth=1.6)
    ax.set_xscale("log")
    ax.set_ylim(0, 101)
    ax.set_xlim(100.0 / max(rows, 1), 100)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{name} ({rows:,} rows)", fontsize=9)
    ax.set_xlabel("hot rows (% of table, log)", fontsize=8)
    ax.set_ylabel("lookups covered (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    if legend:
        ax.legend(fontsize=7, loc="lower right")
