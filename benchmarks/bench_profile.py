"""Profiling throughput and memory on a Criteo-Terabyte-shaped input, beside plain loops.

    .venv/bin/python benchmarks/bench_profile.py [--samples 40000000] [--alpha 1.1] \
        [--repeat 3] [--baseline-src DIR] [--cli-only]

Writes a samples x 26 int32 `.npy` (Zipf ids over the 26 Criteo Terabyte cardinalities, 178M
rows in all; TorchRec's `day_*_sparse.npy` layout) under /tmp/torchrec_hot_bench (reused when
present), then runs `torchrec-hot profile FILE` end to end (`--repeat` times: best, median),
the same steps timed phase by phase (imports, counting, save, summary), the profile's size
on disk and its load time, and the size of an exact Criteo-Kaggle-shaped profile of 40,000
samples; with `--baseline-src DIR` (an earlier torchrec-hot's source tree, e.g. `git archive
REV | tar -x -C DIR`) all of that also for the baseline ("before"; runs alternate). Then
(unless `--cli-only`) each method in a fresh process over the same file, reporting ids/s and
that process's peak RSS:
  torchrec-hot exact       PopularityProfile.update_chunk over the streaming .npy reader
  torchrec-hot exact, 1 thread
  torchrec-hot sketch 5%   --max-memory at 5% of exact counts' 8 bytes/row
  torchrec-hot sample 5%   --sample-rate 0.05
  plain np.bincount        per chunk and column of np.load(mmap_mode="r"), int64 counts
  plain torch.index_add_   same loop, int64 counts
and, on 2M ids of the largest table, Apache DataSketches' frequent_items_sketch (per-item
Python updates) beside HeavyHitterSketch at the same number of counters. Prints the tables and
writes its section of docs/BENCHMARKS.md. Not a test.

This file runs and times; bench_profile_input.py makes the input, bench_profile_children.py
holds what each `--child` process runs, bench_profile_report.py formats the section.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_profile_children import METHODS, run_child
from bench_profile_input import WORK, make_input
from bench_profile_report import NOTES, format_cli, format_report
from doc_sections import write_section
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]


def _env(src: Path) -> dict:
    """The environment that makes a child import torchrec-hot from the source tree `src`."""
    return {**os.environ, "PYTHONPATH": str(src)}


def run_cli(path: Path, src: Path, out: Path) -> dict:
    """`torchrec-hot profile FILE` end to end: process start, imports, counting, the printed
    summary and the save, on the wall clock; peak RSS from /usr/bin/time."""
    cmd = [sys.executable, "-m", "torchrec_hot.cli.main", "profile", str(path), "--workload",
           "criteo-terabyte", "--out", str(out)]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    load = os.getloadavg()[0]
    start = time.perf_counter()
    # cwd: `python -m` puts it first on sys.path, so not a source tree
    done = subprocess.run(timer + cmd, capture_output=True, text=True, check=True, cwd=WORK,
                          env=_env(src))
    seconds = time.perf_counter() - start
    rss = [int(line.split()[-1]) * 1024 for line in done.stderr.splitlines()
           if "Maximum resident set size" in line]
    cpu = sum(float(line.split()[-1]) for line in done.stderr.splitlines()
              if "User time (seconds)" in line or "System time (seconds)" in line)
    rows = np.load(path, mmap_mode="r").shape[0]
    return {"ids": rows * 26, "seconds": seconds, "peak_rss": rss[0] if rss else float("nan"),
            "cpu": cpu if rss else float("nan"), "load_before": load}


def run_method(name: str, path: Path, src: Path = ROOT, arg: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", name, "--input", str(path)]
    cmd += ["--arg", arg] if arg else []
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT,
                          env=_env(src))
    return json.loads(done.stdout.strip().splitlines()[-1])


def kaggle_profile(src: Path, out: Path) -> int:
    """Bytes of an exact Criteo-Kaggle-shaped profile of 40,000 samples (5 batches of 8,000,
    Zipf 1.1, default trace), written by the `profile` command of `src`."""
    cmd = [sys.executable, "-m", "torchrec_hot.cli.main", "profile", "--synthetic",
           "criteo-kaggle", "--batches", "5", "--batch-size", "8000", "--out", str(out)]
    subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=WORK, env=_env(src))
    return out.stat().st_size


def measure_cli(path: Path, trees: dict[str, Path], repeat: int) -> dict:
    """Per source tree: end-to-end runs (alternating between trees), phases, the written
    profile's bytes and load time, the Kaggle-shaped profile's bytes."""
    res: dict = {name: {"runs": []} for name in trees}
    for _ in tqdm(range(repeat), desc="CLI runs", file=sys.stderr):
        for name, src in trees.items():
            res[name]["runs"].append(run_cli(path, src, WORK / f"cli_{name}.npz"))
    for name, src in trees.items():
        out = WORK / f"cli_{name}.npz"
        res[name]["file_bytes"] = out.stat().st_size
        res[name]["load_seconds"] = run_method("load", out, src)["seconds"]
        res[name]["phases"] = run_method("phases", path, src, str(WORK / f"phases_{name}.npz"))
        res[name]["phases"]["load_before"] = os.getloadavg()[0]
        res[name]["kaggle_bytes"] = kaggle_profile(src, WORK / f"kaggle_{name}.npz")
    return res


def coverage(path_exact: Path, path_other: Path) -> list[tuple[str, int, float, float]]:
    """(table, rows, share covered at 0.1% and 1% of rows) of `other`'s hot rows, relative to
    exact counts' hot rows, for the four largest tables."""

    from torchrec_hot import load_profile

    exact, other = load_profile(path_exact), load_profile(path_other)
    out = []
    for t in sorted(exact.tables, key=lambda t: -t.num_embeddings)[:4]:
        c, o = exact.counts(t.name), other.counts(t.name)
        ratios = []
        for frac in (0.001, 0.01):
            k = int(frac * t.num_embeddings)
            best = np.partition(c, c.size - k)[c.size - k :].sum()
            chosen = np.argpartition(-o, k)[:k]
            ratios.append(float(c[chosen].sum() / best))
        out.append((t.name, t.num_embeddings, ratios[0], ratios[1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=40_000_000)
    parser.add_argument("--alpha", type=float, default=1.1)
    parser.add_argument("--repeat", type=int, default=3, help="end-to-end CLI runs per tree")
    parser.add_argument("--baseline-src", type=Path, default=None,
                        help="source tree of an earlier torchrec-hot, measured as 'before'")
    parser.add_argument("--cli-only", action="store_true", help="skip the plain-loop methods")
    parser.add_argument("--child", default=None)
    parser.add_argument("--input", default=None)
    parser.add_argument("--arg", default=None)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.input, args.arg)
        return
    start = time.perf_counter()
    path = make_input(args.samples, args.alpha)
    print(f"input: {path} ({path.stat().st_size / 2**30:.2f} GiB), "
          f"made/reused in {time.perf_counter() - start:.0f} s", flush=True)
    trees = {"before": args.baseline_src} if args.baseline_src else {}
    trees["after"] = ROOT
    cli = measure_cli(path, trees, args.repeat)
    print(json.dumps(cli, indent=1), flush=True)
    results = {}
    if args.cli_only:
        text = format_cli(args, path, cli)
        print(text)
        write_section("bench_profile", text + NOTES)
        return
    for name in METHODS:
        load = os.getloadavg()[0]
        results[name] = run_method(name, path)
        results[name]["load_before"] = load
        print(name, results[name], flush=True)
    cov = {m: coverage(WORK / "profile_exact.npz", WORK / f"profile_{m}.npz")
           for m in ("sketch", "sample")}
    text = format_cli(args, path, cli) + "\n" + format_report(args, path, results, cov)
    print(text)
    write_section("bench_profile", text)


if __name__ == "__main__":
    main()
