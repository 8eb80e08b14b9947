"""Planning a whole model: the same tables as one EmbeddingBagCollection or split over several.

    .venv/bin/python benchmarks/bench_whole_model.py            # Criteo Terabyte, 8 CUDA ranks
    .venv/bin/python benchmarks/bench_whole_model.py --quick    # Kaggle x 0.05, smoke

What is measured: the 26 Criteo-Terabyte-shaped tables (178M rows, dim 128; `criteo_tables`),
one profile of `--batches` x 8192 samples of Zipf(1.05) ids (`zipf_batches`), planned for 8
CUDA ranks (`make_topology(8, "cuda")`, planned on this CPU) at 1% of all tables' bytes
(weights + row-wise Adagrad state) per rank, with the stock comparison. Two layouts of the same
tables, each planned `--repeats` times, alternating: one module (all 26 tables in one EBC) and
three modules (13 + 10 tables in two EBCs, the last 3 as an EmbeddingCollection's sequence
tables: `HotPlanner.plan({path: configs})`, what `HotShardingPlanner` does for a whole model).
Reports the median wall seconds of `plan()` per layout, their ratio, and whether both plans
give the same hot rows and hot share (one budget: they should). Prints the table and writes
section `bench_whole_model` of docs/BENCHMARKS.md. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from torchrec import EmbeddingConfig
from torchrec.optim import RowWiseAdagrad
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_sections import machine, write_section  # noqa: E402

from torchrec_hot import HotPlanner, PopularityProfile, make_topology  # noqa: E402
from torchrec_hot.data import criteo_tables, zipf_batches  # noqa: E402
from torchrec_hot.planner.memory import row_bytes  # noqa: E402

WORLD, BATCH, BUDGET = 8, 8192, 0.01


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    workload, scale = ("criteo-kaggle", 0.05) if args.quick else ("criteo-terabyte", 1.0)
    tables = criteo_tables(workload, scale, 128)
    start = time.perf_counter()
    profile = PopularityProfile(tables, trace_max_ids=0)
    for kjt in tqdm(zipf_batches(tables, args.batches, BATCH, 1.05), total=args.batches,
                    desc="profile"):
        profile.update(kjt)
    profiled = time.perf_counter() - start
    total = sum(t.num_embeddings * row_bytes(t, RowWiseAdagrad) for t in tables)
    budget = int(BUDGET * total / WORLD)
    layouts = {
        "one module (26 tables)": {"sparse.ebc": tables},
        "three modules (13 + 10 + EC 3)": {
            "sparse.ebc_a": tables[:13], "sparse.ebc_b": tables[13:23],
            "sparse.ec": [
                EmbeddingConfig(name=t.name, num_embeddings=t.num_embeddings,
                                embedding_dim=t.embedding_dim, feature_names=t.feature_names)
                for t in tables[23:]
            ],
        },
    }
    seconds: dict[str, list[float]] = {name: [] for name in layouts}
    plans = {}
    planner = HotPlanner(make_topology(WORLD, "cuda"), budget, batch_size=BATCH,
                         optimizer_class=RowWiseAdagrad)
    for _ in tqdm(range(args.repeats), desc="plans"):
        for name, modules in layouts.items():
            start = time.perf_counter()
            plans[name] = planner.plan(modules, profile)
            seconds[name].append(time.perf_counter() - start)
    one, three = (plans[n] for n in layouts)
    same_rows = all(
        np.array_equal(a.hot_ids, b.hot_ids) for a, b in zip(one.tables, three.tables, strict=True)
    )
    med = {name: statistics.median(s) for name, s in seconds.items()}
    ratio = med["three modules (13 + 10 + EC 3)"] / med["one module (26 tables)"]
    rows = [
        f"| {name} | {med[name]:.2f} | {min(s):.2f}-{max(s):.2f} | "
        f"{100 * plans[name].hot_lookup_share:.2f}% | {len(plans[name].module_paths)} |"
        for name, s in seconds.items()
    ]
    text = "\n".join([
        "## Planning a whole model: one module vs several (bench_whole_model.py)",
        "",
        f"{workload} x {scale} ({sum(t.num_embeddings for t in tables):,} rows, dim 128), "
        f"{WORLD} CUDA ranks planned on CPU, HBM budget {BUDGET:.0%} of all tables' bytes "
        f"({budget / 2**20:.0f} MiB per rank), row-wise Adagrad, stock comparison included; "
        f"profile of {args.batches} x {BATCH} samples ({profiled:.0f} s); {args.repeats} "
        f"plans per layout, alternating. Machine: {machine()}.",
        "",
        "| layout | plan() s, median | range | hot share (profile) | modules |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"three modules / one module: {ratio:.2f}x plan time; same hot rows in both: "
        f"{'yes' if same_rows else 'NO'}.",
    ])
    print(text)
    if not args.quick:
        write_section("bench_whole_model", text)
        print("wrote docs/BENCHMARKS.md (section bench_whole_model)")


if __name__ == "__main__":
    main()
