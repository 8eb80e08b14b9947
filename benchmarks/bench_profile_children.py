"""What `bench_profile.py --child NAME` runs, each in a fresh process over the input file.

Each method returns a dict of its measurements (ids, seconds, ...); `run_child` adds the
process's peak RSS (bytes) and prints the dict as one JSON line for the parent to read.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
from bench_profile_input import CHUNK, WORK


# ---- methods, each run in a fresh process ------------------------------------------------
def _ours(path: str, mode: str) -> dict:
    from torchrec_hot import PopularityProfile, save_profile
    from torchrec_hot.data.readers import open_source
    from torchrec_hot.data.synthetic import criteo_tables

    tables = criteo_tables("criteo-terabyte")
    rows = sum(t.num_embeddings for t in tables)
    kwargs: dict = {}
    if mode == "sketch":
        kwargs["max_memory_bytes"] = int(0.05 * 8 * rows)
    if mode == "sample":
        kwargs["sample_rate"] = 0.05
    if mode == "1thread":
        kwargs["threads"] = 1
    profile = PopularityProfile(tables, **kwargs)
    start = time.perf_counter()
    ids = 0
    for chunk in open_source([path]).chunks():
        profile.update_chunk(chunk, batch_size=8192)
        ids += chunk.num_ids
    seconds = time.perf_counter() - start
    out = WORK / f"profile_{mode}.npz"  # read back by `coverage`
    save_profile(profile, out)
    return {"ids": ids, "seconds": seconds, "counter_bytes": profile.nbytes,
            "sketched": sum(profile.mode(t.name) == "sketch" for t in tables)}


def _plain(path: str, kind: str) -> dict:
    import torch

    from torchrec_hot.data.synthetic import CRITEO_TERABYTE

    data = np.load(path, mmap_mode="r")
    if kind == "bincount":
        counts = [np.zeros(n, dtype=np.int64) for n in CRITEO_TERABYTE]
    else:
        counts = [torch.zeros(n, dtype=torch.int64) for n in CRITEO_TERABYTE]
    start = time.perf_counter()
    for s in range(0, data.shape[0], CHUNK):
        block = np.asarray(data[s : s + CHUNK])
        for j, n in enumerate(CRITEO_TERABYTE):
            col = block[:, j]
            if kind == "bincount":
                counts[j] += np.bincount(col, minlength=n)
            else:
                ids = torch.from_numpy(col.astype(np.int64))
                counts[j].index_add_(0, ids, torch.ones_like(ids))
    return {"ids": int(data.shape[0]) * 26, "seconds": time.perf_counter() - start}


def _datasketches(path: str, _: str) -> dict:
    import torch

    from torchrec_hot.profiling.counters import HeavyHitterSketch

    data = np.load(path, mmap_mode="r")
    ids = np.ascontiguousarray(data[: 2_000_000, 19]).astype(np.int64)  # 48.9M-row table
    out: dict = {"ids": int(ids.size)}
    try:
        import datasketches as ds

        sk = ds.frequent_items_sketch(17)  # 2^17 map, 0.75 * 2^17 = 98k counters
        start = time.perf_counter()
        for x in ids.tolist():
            sk.update(x)
        out["datasketches_seconds"] = time.perf_counter() - start
    except ImportError:
        out["datasketches_seconds"] = None
    ours = HeavyHitterSketch(48937457, 98304)
    start = time.perf_counter()
    for s in range(0, ids.size, 1 << 18):
        ours.add(torch.from_numpy(ids[s : s + (1 << 18)]))
    out["ours_seconds"] = time.perf_counter() - start
    return out


METHODS = {
    "torchrec-hot exact (2 threads)": (_ours, "exact"),
    "torchrec-hot exact (1 thread)": (_ours, "1thread"),
    "torchrec-hot sketch, 5% memory": (_ours, "sketch"),
    "torchrec-hot sample 5%": (_ours, "sample"),
    "plain np.bincount loop": (_plain, "bincount"),
    "plain torch.index_add_ loop": (_plain, "index_add"),
    "sketch update, 2M ids": (_datasketches, ""),
}


def run_child(name: str, path: str, arg: str | None) -> None:
    """Run method `name` over `path` (with `arg`, else its default) and print its results as
    one JSON line, peak RSS included."""
    fn, default = {**METHODS, "phases": (_phases, None), "load": (_load, "")}[name]
    result = fn(path, arg or default)
    result["peak_rss"] = _peak_rss()
    print(json.dumps(result))


def _peak_rss() -> int:
    """This process's peak resident set (VmHWM), bytes. Not ru_maxrss: Linux carries the
    pre-exec high-water mark of the forking parent into it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _phases(path: str, out: str) -> dict:
    """The `profile` command's steps, each timed, in this fresh process (`--child phases`);
    imports: from the process's start (interpreter, numpy, this script) to the command's
    imports done."""
    import torch

    import torchrec_hot.cli.main  # noqa: F401  (what the command imports)
    from torchrec_hot import PopularityProfile, TableSpec, save_profile
    from torchrec_hot.data.readers import open_source
    from torchrec_hot.data.synthetic import WORKLOADS
    from torchrec_hot.profiling.summary import format_summary, profile_summary

    imported = time.perf_counter()
    start = imported - _process_age()
    gc.freeze()  # as the command does (cli.main, cli.profiling.run_profile)
    torch.set_num_threads(1)
    tables = [TableSpec(f"t_cat_{i}", n, 128, (f"cat_{i}",))
              for i, n in enumerate(WORKLOADS["criteo-terabyte"])]
    profile = PopularityProfile(tables)
    for chunk in open_source([path]).chunks():
        profile.update_chunk(chunk, None, 8192)
    counted = time.perf_counter()
    save_profile(profile, out)
    saved = time.perf_counter()
    format_summary(profile_summary(profile), profile)
    done = time.perf_counter()
    return {"imports": imported - start, "counting": counted - imported,
            "save": saved - counted, "summary": done - saved}


def _process_age() -> float:
    """Seconds since this process started (/proc; 10 ms resolution)."""
    start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def _load(path: str, _: str) -> dict:
    """Best of 3 `load_profile(path)` in this process (imports excluded)."""
    from torchrec_hot import load_profile

    times = []
    for _ in range(3):
        start = time.perf_counter()
        load_profile(path)
        times.append(time.perf_counter() - start)
    return {"seconds": min(times)}
