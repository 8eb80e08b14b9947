"""Allocation by expected value: rows ranked by Good-Turing-smoothed counts vs raw counts.

    .venv/bin/python benchmarks/bench_allocation.py            # bench_planner's workloads
    .venv/bin/python benchmarks/bench_allocation.py --quick    # smoke: Kaggle x 0.05

What is measured. The static allocation `allocate_hot_rows` (what `HotPlanner` gives each table,
whole tables promoted as the planner does) of the same budgets from two valuations of the
profile's rows: raw counts, and `expected_counts` (each table's Good-Turing expectation of a row
in new input, made monotone in the count, so that within a table the order is the raw one and
only the split of the budget between tables changes). Each allocation's hot rows are then
scored on the hold-out: the share of all its lookups they take (tables weighted by lookups).
Workloads, tables, ranks, batch and budgets are bench_planner's (`WORKLOADS`, `BUDGETS`,
`profiles`: window 0 profiled, window 1 held out). Prints the table and writes section
`bench_allocation` of docs/BENCHMARKS.md, the raw rows to /tmp/bench_allocation.json.
Not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_planner import (
    BATCH,
    BUDGETS,
    DIM,
    WORKLOADS,
    WORLD,
    parse_workload_args,
    profiles,
    workload_parser,
)
from doc_sections import machine, write_section
from tqdm import tqdm

RAW = Path("/tmp/bench_allocation.json")


def held_out_share(tables: list, profile: Any, holdout: Any, hot: dict[str, int]) -> float:
    """Share (0..1) of all the hold-out's lookups that each table's `hot[name]` hottest
    profiled rows take."""
    from torchrec_hot.tables.hottest import hottest_rows

    served = total = 0
    for t in tables:
        held = holdout.counts(t.name)
        served += int(held[hottest_rows(profile.counts(t.name), hot[t.name])].sum())
        total += int(held.sum())
    return served / total if total else 0.0


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    from torchrec.optim import RowWiseAdagrad

    from torchrec_hot.data.synthetic import criteo_tables
    from torchrec_hot.planner.memory import row_bytes
    from torchrec_hot.profiling.stats import expected_counts
    from torchrec_hot.tables.allocation import TableDemand, allocate_hot_rows

    datasets = [("criteo-kaggle", args.scale)] if args.quick else [
        ("criteo-terabyte", 1.0), ("criteo-kaggle", 1.0)]  # fmt: skip
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(datasets) * len(WORKLOADS), desc="workloads", file=sys.stderr)
    for dataset, scale in datasets:
        tables = criteo_tables(dataset, scale, embedding_dim=DIM)
        per_row = {t.name: row_bytes(t, RowWiseAdagrad) for t in tables}
        total = sum(t.num_embeddings * per_row[t.name] for t in tables)
        for workload in WORKLOADS:
            profile, holdout, _ = profiles(
                tables, workload, args.profile_batches, args.holdout_batches, args.seed
            )
            demands = {
                "raw counts": [
                    TableDemand.from_counts(t.name, profile.counts(t.name), per_row[t.name])
                    for t in tables
                ],
                "expected": [
                    TableDemand.from_counts(
                        t.name, expected_counts(profile.counts(t.name)), per_row[t.name]
                    )
                    for t in tables
                ],
            }
            for share in BUDGETS:
                budget = int(share * total)
                scores = {}
                for name, ds in demands.items():
                    hot = allocate_hot_rows(ds, budget, max_whole_table_bytes=budget // WORLD)
                    scores[name] = held_out_share(tables, profile, holdout, hot)
                rows.append({"dataset": dataset, "scale": scale, "workload": workload.name,
                             "budget": share, **scores})  # fmt: skip
                tqdm.write(f"{dataset} {workload.name} {share:.0%}: raw {scores['raw counts']:.4%}"
                           f" expected {scores['expected']:.4%}", file=sys.stderr)  # fmt: skip
            del profile, holdout, demands
            gc.collect()
            bar.update()
    bar.close()
    return rows


def markdown(rows: list[dict[str, Any]], args: dict[str, Any], seconds: float) -> str:
    gains = [100 * (r["expected"] - r["raw counts"]) for r in rows]
    lines = [
        "## Allocation by expected value (bench_allocation.py)",
        "",
        f"`python benchmarks/bench_allocation.py{' --quick' if args['quick'] else ''}` "
        f"({seconds:.0f} s on {machine()}): bench_planner's workloads, {WORLD} ranks x batch "
        f"{BATCH}, dim {DIM}, row-wise Adagrad; profile {args['profile_batches']} global batches "
        f"(window 0), hold-out {args['holdout_batches']} (window 1). The static allocation of each "
        "budget (share of all tables' bytes) from raw counts and from Good-Turing expected "
        "counts (`profiling.stats.expected_counts`: per table, monotone in the count, so only "
        "the split of the budget between tables changes), each scored by the share of the "
        "hold-out's lookups its hot rows take.",
        "",
        "| dataset | workload | budget | held-out share: raw counts | expected | gain (points) |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r, gain in zip(rows, gains, strict=True):
        lines.append(
            f"| {r['dataset']} x {r['scale']:g} | {r['workload']} | {r['budget']:.0%} | "
            f"{r['raw counts']:.4%} | {r['expected']:.4%} | {gain:+.4f} |"
        )
    worse = [r for r, g in zip(rows, gains, strict=True) if g < 0]
    lines += [
        "",
        f"Gain from {min(gains):+.4f} to {max(gains):+.4f} points (mean {np.mean(gains):+.4f}); "
        + ("expected counts serve the hold-out at least as well in every cell."
           if not worse else f"worse in {len(worse)} of {len(rows)} cells: "
           + ", ".join(f"{r['dataset']} {r['workload']} {r['budget']:.0%}" for r in worse)
           + "."),
        "",
        "The planner ranks rows by raw counts unless asked "
        "(`HotPlanner(rank_rows_by=\"expected\")`,"
        " `plan --rank-rows-by expected`): the default switches only when no cell is worse. "
        "Good-Turing assumes popularity is stable from one window to the next; in the drift and "
        "session workloads the largest tables' hot ids move, and there the smoothed values can "
        "move budget the wrong way.",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_workload_args(workload_parser(__doc__.splitlines()[0]), argv)
    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
    else:
        start = time.perf_counter()
        rows = measure(args)
        keep = ("quick", "scale", "profile_batches", "holdout_batches", "seed")
        results = {"rows": rows, "args": {k: getattr(args, k) for k in keep},
                   "seconds": time.perf_counter() - start}  # fmt: skip
        RAW.write_text(json.dumps(results, indent=1))
    text = markdown(results["rows"], results["args"], results["seconds"])
    print(text)
    if not args.no_doc:
        write_section("bench_allocation", text)


if __name__ == "__main__":
    main()
