"""Checkpoint save/load and row-migration cost of a hot/cold DMP model, 2 gloo ranks on CPU.

    .venv/bin/python benchmarks/bench_checkpoint.py [--scale 0.02] [--dim 64] [--repeats 3]

A Criteo-Kaggle-shaped model (26 tables, every table's rows x --scale) with row-wise Adagrad,
planned hot/cold for 2 CPU ranks; measures sharded DCP save and load (to /tmp) and `replan`
to a fresh hot set of the same sizes (from another Zipf permutation). Prints a table and
writes it to its section of docs/BENCHMARKS.md (median of --repeats, seconds).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from doc_sections import write_section
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from tqdm import tqdm

from torchrec_hot import (
    HotPlanner,
    PopularityProfile,
    apply_hot_plan,
    load_checkpoint,
    make_topology,
    rehot_plan,
    replan,
    save_checkpoint,
)
from torchrec_hot.data import criteo_tables, zipf_batches


class _Model(nn.Module):
    def __init__(self, tables) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))

    def forward(self, kjt: KeyedJaggedTensor):  # type: ignore[no-untyped-def]
        return self.ebc(kjt)


def _worker(rank: int, port: int, args: argparse.Namespace, tmp: str) -> None:
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    tables = criteo_tables("criteo-kaggle", args.scale, args.dim)
    profile = PopularityProfile(tables).update_all(zipf_batches(tables, 20, 2048, 1.05, seed=1))
    budget = int(args.hbm_share * sum(t.num_embeddings for t in tables) * (args.dim * 4 + 4) / 2)
    plan = HotPlanner(make_topology(2, "cpu"), budget, batch_size=2048,
                      compare_with_stock=False).plan(tables, profile, "ebc")
    model = _Model(tables)
    apply_optimizer_in_backward(RowWiseAdagrad, model.ebc.parameters(), {"lr": 0.01})
    dmp = DistributedModelParallel(apply_hot_plan(model, plan), plan=plan.sharding_plan,
                                   device=torch.device("cpu"))
    for kjt in zipf_batches(tables, 2, 512, 1.05, seed=2 + rank):  # some optimizer state
        torch.cat([v for v in dmp(kjt).to_dict().values()], 1).sum().backward()
    times: dict[str, list[float]] = {"save": [], "load": [], "replan": []}
    moved = []
    directory = Path(tmp) / "ckpt"  # one directory all ranks see
    for i in tqdm(range(args.repeats), disable=rank != 0, desc="repeats", file=sys.stderr):
        dist.barrier()
        t = time.perf_counter()
        save_checkpoint(dmp, directory, step=i)
        times["save"].append(time.perf_counter() - t)
        dist.barrier()
        t = time.perf_counter()
        load_checkpoint(dmp, directory)
        times["load"].append(time.perf_counter() - t)
        recent = PopularityProfile(tables).update_all(
            zipf_batches(tables, 5, 2048, 1.05, seed=100 + i))
        plan = rehot_plan(plan, recent)
        dist.barrier()
        t = time.perf_counter()
        report = replan(dmp, plan)
        times["replan"].append(time.perf_counter() - t)
        moved.append(sum(report.rows_moved.values()))
    if rank == 0:
        rows = sum(t.num_embeddings for t in tables)
        split = [t for t in plan.tables if t.placement.value == "split"]
        torch.save({"times": times, "moved": moved, "rows": rows,
                    "split_rows": sum(t.num_embeddings for t in split),
                    "hot_rows": sum(t.hot_rows for t in split)}, Path(tmp) / "result.pt")
    dist.destroy_process_group()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.02)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--hbm-share", type=float, default=0.05, help="hot bytes / all table bytes")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(port, args, tmp), nprocs=2, join=True)
        r = torch.load(Path(tmp) / "result.pt")
    mb = r["rows"] * (args.dim * 4 + 4) / 2**20
    lines = [
        "## Checkpoints and re-planning (bench_checkpoint.py)",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_checkpoint.py --scale {args.scale} "
        f"--dim {args.dim} --hbm-share {args.hbm_share} --repeats {args.repeats}`; 2 gloo ranks "
        f"on this 2-core CPU machine, 1 thread each; {time.strftime('%Y-%m-%d')}.",
        f"Model: Criteo-Kaggle-shaped, 26 tables, {r['rows']:,} rows, dim {args.dim}, row-wise "
        f"Adagrad ({mb:.0f} MiB of weights + state); {r['split_rows']:,} rows in split tables, "
        f"{r['hot_rows']:,} of them hot.",
        "",
        "| operation | median s | min s | max s |",
        "|---|---|---|---|",
    ]
    for name, label in (("save", "sharded DCP save (logical layout)"),
                        ("load", "sharded DCP load"),
                        ("replan", "replan: migrate rows + optimizer state")):
        ts = r["times"][name]
        lines.append(f"| {label} | {statistics.median(ts):.2f} | {min(ts):.2f} | {max(ts):.2f} |")
    lines += ["", f"Rows that changed hotness per re-plan: {r['moved']}. A re-plan moves every "
              "row of each changed split table through all-to-all (not only the rows whose "
              "hotness changed), so its cost follows the split tables' size.", ""]
    text = "\n".join(lines)
    print(text)
    write_section("bench_checkpoint", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
