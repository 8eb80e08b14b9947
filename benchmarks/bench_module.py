"""Module overhead: HotColdEmbeddingBagCollection against the stock EmbeddingBagCollection.

    python benchmarks/bench_module.py                      # full run, writes docs/
    python benchmarks/bench_module.py --quick --no-write   # 2 shares x 2 batch sizes

Criteo-Kaggle-shaped tables (26, rows x `--scale`, dim 64), one Zipf(alpha) id per feature and
sample. Hot share s: every table's hot ids are its top rows in a profile of the same
distribution, as few as serve s of the profile's lookups (the share measured on the timed batches
is printed beside it). Per case (mode, share, per-rank batch B) both modules run forward +
backward on the same batches, alternating step by step after warm-up; medians (DMP: per step the
slower rank). Modes: `unsharded` (one process; backward leaves dense .grad as the stock EBC
does), `dmp` (2-rank gloo DistributedModelParallel, table-wise, SGD fused in backward via
`apply_optimizer_in_backward`; each split table's halves on one rank, as `HotPlanner` places
them, summed there before the output all-to-all), `dmp-apart` (the same with the halves where
TorchRec's planner puts them, merged after the all-to-all), `cuda` (same code on GPUs:
unsharded, and 2-rank nccl DMP with hot tables `fused` in HBM, cold `fused_uvm`; skipped
without CUDA). `--malloc tuned` raises
glibc's mmap / trim thresholds in every process (see docs/BENCHMARKS.md); `both` runs each.

Breakdown of the hot/cold step, by forward hooks (the module is not changed): validation
(`remap.validate` timed alone on the same batch), remap (the remap call minus validation), inner
split-EBC (its forward; unsharded, the sum of its tables' calls; less the sum on the rank),
merge (hot + cold wherever it is done: the rest of the forward, plus the sum on the rank inside
the inner forward), backward (step minus forward), and of it, under DMP, the merge's backward
(`MergeRows`, the one after the all-to-all and the one on the rank, timed by tensor hooks on
their outputs and inputs). Unsharded the merge's
backward is the concatenation's, as in the stock EBC, and is not counted as ours.

Parts: `bench_module_workload.py` (batches, hot ids), `bench_module_steps.py` (models, timed
steps, DMP ranks), `bench_module_report.py` (medians, tables, plot, doc section).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_module_report import (  # noqa: E402
    RATIO_CELL,
    breakdown_table,
    finish,
    plot,
    ratio_table,
)
from bench_module_steps import run_cases, run_dmp  # noqa: E402
from bench_module_workload import tune_malloc  # noqa: E402
from doc_sections import machine, write_section  # noqa: E402

from torchrec_hot.data.synthetic import criteo_tables  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=0.02, help="rows x scale (Criteo Kaggle)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--alpha", type=float, default=1.1, help="Zipf exponent")
    p.add_argument("--shares", default="0.5,0.8,0.95,0.99", help="hot lookup shares")
    p.add_argument("--batch-sizes", default="512,1024,2048,4096", help="per rank")
    p.add_argument("--modes", default="unsharded,dmp,dmp-apart,cuda",
                   help="of unsharded,dmp,dmp-apart,cuda")
    p.add_argument("--malloc", default="both", choices=["default", "tuned", "both"])
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--batches", type=int, default=3, help="distinct batches per case")
    p.add_argument("--profile-samples", type=int, default=1 << 16, help="lookups per table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="shares 0.5,0.95; batches 512,4096")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--doc", type=Path, default=Path("docs/BENCHMARKS.md"))
    p.add_argument("--png", type=Path, default=Path("docs/bench_module.png"))
    args = p.parse_args(argv)
    if args.quick:
        args.shares, args.batch_sizes = "0.5,0.95", "512,4096"
    args.shares = [float(s) for s in args.shares.split(",")]
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.modes = args.modes.split(",")
    args.colocate = True  # `run_dmp(..., colocate=False)` for dmp-apart
    return args


def run_all(cfg, malloc: str) -> list[dict]:
    cfg.malloc, suffix = malloc, "" if malloc == "default" else f" ({malloc} malloc)"
    cases: list[dict] = []
    if "unsharded" in cfg.modes:
        cases += finish(run_cases(cfg, torch.device("cpu"), False, 0, "unsharded"), "unsharded")
    if "dmp" in cfg.modes:
        cases += finish(run_dmp(cfg, "gloo"), "dmp gloo")
    if "dmp-apart" in cfg.modes:
        cases += finish(run_dmp(cfg, "gloo", colocate=False), "dmp gloo, halves apart")
    if "cuda" in cfg.modes and torch.cuda.is_available():
        cases += finish(run_cases(cfg, torch.device("cuda"), False, 0, "cuda"), "cuda unsharded")
        if torch.cuda.device_count() >= 2:
            cases += finish(run_dmp(cfg, "nccl"), "dmp nccl")
    return [{**c, "mode": c["mode"] + suffix} for c in cases]


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    torch.set_num_threads(cfg.threads)
    command = " ".join(
        ["python benchmarks/bench_module.py", *(sys.argv[1:] if argv is None else argv)]
    )
    start, load = time.time(), os.getloadavg()[0]
    cases = []
    for malloc in ("default", "tuned") if cfg.malloc == "both" else (cfg.malloc,):
        if malloc == "tuned":
            tune_malloc()  # this process (unsharded); DMP ranks tune themselves
        cases += run_all(cfg, malloc)
    minutes = (time.time() - start) / 60
    rows = sum(t.num_embeddings for t in criteo_tables("criteo-kaggle", cfg.scale, 1))
    ratios, breakdown = ratio_table(cases, cfg.batch_sizes), breakdown_table(cases)
    print(f"\ntorch threads per process: {torch.get_num_threads()}\n")
    print(f"hot/cold step / stock step, {RATIO_CELL}:\n{ratios}\n\nbreakdown (ms):\n{breakdown}")
    print(f"\n{len(cases)} cases in {minutes:.1f} min")
    if cfg.no_write:
        return
    write_section(
        "bench_module",
        f"""## Module overhead (bench_module.py)

Command: `{command}` ({minutes:.1f} min). Date: {datetime.date.today().isoformat()}.
Machine: {machine()}. torch threads per process: {cfg.threads}.
Load average at start / end: {load:.1f} / {os.getloadavg()[0]:.1f}.

Workload: Criteo Kaggle's 26 tables x {cfg.scale} rows ({rows:,} rows), dim {cfg.dim}, Zipf
alpha {cfg.alpha}, one id per feature and sample; {cfg.warmup} warm-up + {cfg.repeats} timed
steps per model and case, alternating stock and hot/cold, median.

Forward + backward step time, hot/cold / stock: {RATIO_CELL}.

{ratios}

![ratio vs batch size]({cfg.png.name})

Breakdown (ms, median over steps; ours = validate + remap + merge + merge bwd under DMP;
unsharded, ours = validate + remap + merge less what the stock forward spends outside its
tables' calls (its own concatenation of the pooled outputs, which our merge includes; its
backward is in both models' backward as well):

{breakdown}
""",
        cfg.doc,
    )
    plot(cases, cfg.png)
    print(f"wrote {cfg.doc} and {cfg.png}")


if __name__ == "__main__":
    main()
