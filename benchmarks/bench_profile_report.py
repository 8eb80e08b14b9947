"""The docs section of `bench_profile.py`: its tables and notes (formatting only, no measuring)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np


def format_cli(args, path: Path, cli: dict) -> str:
    """The section's head: the command, the CLI end to end before/after, phases, files."""
    flags = f" --repeat {args.repeat}" + (" --baseline-src DIR" if args.baseline_src else "")
    flags += " --cli-only" if args.cli_only else ""
    ids = next(iter(cli.values()))["runs"][0]["ids"]
    lines = [
        "## Profiling throughput and memory (bench_profile.py)",
        "",
        "Command (from the repository root; generated input goes to /tmp/torchrec_hot_bench; "
        "DIR: the source tree measured as 'before', `git archive REV | tar -x -C DIR`):",
        "",
        "```",
        f".venv/bin/python benchmarks/bench_profile.py --samples {args.samples} "
        f"--alpha {args.alpha}{flags}",
        "```",
        "",
        f"`torchrec-hot profile tb.npy --workload criteo-terabyte --out p.npz` end to end "
        f"(process start to exit, {ids:,} ids, {args.samples:,} samples x 26 int32 columns, "
        f"{path.stat().st_size / 2**30:.2f} GiB from the page cache; 2 cores shared with other "
        "jobs, so each row gives the best and the median of its runs, which alternate between "
        "trees, their median CPU time (user + system, all threads: less sensitive to other jobs "
        "than the wall clock) and the machine's 1-minute load average before the best run):",
        "",
        "| tree | runs | best s | best M ids/s | median s | median M ids/s | median CPU s "
        "| peak RSS (GiB) | load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in cli.items():
        secs = sorted(x["seconds"] for x in r["runs"])
        best = min(r["runs"], key=lambda x: x["seconds"])
        med = float(np.median(secs))
        rss = max(x["peak_rss"] for x in r["runs"])
        cpu = float(np.median([x["cpu"] for x in r["runs"]]))
        lines.append(f"| {name} | {len(secs)} | {secs[0]:.1f} | {ids / secs[0] / 1e6:.1f} | "
                     f"{med:.1f} | {ids / med / 1e6:.1f} | {cpu:.1f} | {rss / 2**30:.2f} | "
                     f"{best['load_before']:.1f} |")
    lines += [
        "",
        "Where the time goes: the command's steps timed in one fresh process per tree (imports: "
        "from the process's start to torchrec_hot.cli.main imported; counting: reading, "
        "validating and counting every chunk; save; the printed summary's hot shares), seconds:",
        "",
        "| tree | imports | counting | save | summary | total | load avg |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in cli.items():
        ph = r["phases"]
        total = sum(ph[k] for k in ("imports", "counting", "save", "summary"))
        lines.append(f"| {name} | {ph['imports']:.2f} | {ph['counting']:.2f} | "
                     f"{ph['save']:.2f} | {ph['summary']:.2f} | {total:.2f} | "
                     f"{ph['load_before']:.1f} |")
    lines += [
        "",
        "Profile files (exact counts): the benchmark profile above (26 Terabyte-shaped tables, "
        "178M rows, 1.04B ids) and a Criteo-Kaggle-shaped profile of 40,000 samples "
        "(`profile --synthetic criteo-kaggle --batches 5 --batch-size 8000`: 26 tables, 33.8M "
        "rows, 1.04M ids); load = best of 3 `load_profile` in a fresh process:",
        "",
        "| tree | benchmark profile MB | its load s | Kaggle-shaped 40,000-sample profile MB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in cli.items():
        lines.append(f"| {name} | {r['file_bytes'] / 1e6:,.1f} | {r['load_seconds']:.2f} | "
                     f"{r['kaggle_bytes'] / 1e6:,.2f} |")
    return "\n".join(lines) + "\n"


def format_report(args, path: Path, results: dict, cov: dict) -> str:
    lines = [
        "### Counting core beside plain loops",
        "",
        f"Machine: {platform.processor() or platform.machine()}, 2 cores, no GPU; "
        f"input {args.samples:,} samples x 26 int32 columns "
        f"({path.stat().st_size / 2**30:.2f} GiB, Zipf {args.alpha} over the 26 Criteo "
        "Terabyte cardinalities, 178M rows), read from the page cache. Each method runs in its "
        "own process over the same file in the same run; peak RSS is that process's "
        "(imports of torch/torchrec included, about 0.45 GiB). 'load avg' is the machine's "
        "1-minute load average before the method started: other jobs share these 2 cores, so "
        "a load above ~0.5 means the method had to share them.",
        "",
        "| method | ids | seconds | M ids/s | peak RSS (GiB) | counter memory | load avg |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for name, r in results.items():
        if "seconds" not in r:
            continue
        mem = (f"{r['counter_bytes'] / 2**20:,.0f} MiB"
               + (f" ({r['sketched']} tables sketched)" if r.get("sketched") else "")
               if "counter_bytes" in r else "int64, 1,424 MiB")
        lines.append(
            f"| {name} | {r['ids']:,} | {r['seconds']:.1f} | {r['ids'] / r['seconds'] / 1e6:.1f} "
            f"| {r['peak_rss'] / 2**30:.2f} | {mem} | {r['load_before']:.1f} |"
        )
    d = results["sketch update, 2M ids"]
    lines += [
        "",
        "Heavy-hitter sketch update speed, 2M ids of the 48.9M-row table, 98,304 counters:",
        "",
        "| implementation | M ids/s |",
        "| --- | ---: |",
    ]
    if d.get("datasketches_seconds"):
        lines.append(f"| Apache DataSketches frequent_items_sketch (Python, per-item update) | "
                     f"{d['ids'] / d['datasketches_seconds'] / 1e6:.2f} |")
    lines.append(f"| torchrec-hot HeavyHitterSketch (vectorised Misra-Gries, batched) | "
                 f"{d['ids'] / d['ours_seconds'] / 1e6:.2f} |")
    lines += [
        "",
        "Hot rows chosen from the sketch (5% memory) and from the 5% sample, as a share of the "
        "lookups that exact counts' hot rows cover, largest tables:",
        "",
        "| table | rows | sketch @0.1% | sketch @1% | sample @0.1% | sample @1% |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (name, rows, s1, s2), (_, _, p1, p2) in zip(cov["sketch"], cov["sample"], strict=True):
        lines.append(f"| {name} | {rows:,} | {s1:.2%} | {s2:.2%} | {p1:.2%} | {p2:.2%} |")
    return "\n".join(lines) + "\n" + NOTES


NOTES = """
### How the exact pass is fast

* Reading: each chunk of 512K samples (2^19; 2^18 before, 0.25 s slower end to end) is mapped
  (`mmap` with MAP_POPULATE: the kernel maps its pages in one call, no copy into a buffer) and
  transposed 2048 rows at a time into one of three reused column-major buffers (one being
  counted, one queued, one being filled on a background thread). Measured against the earlier
  `readinto` a buffer + 8192-row transpose: 1.68 s vs 2.78 s of CPU for 409M ids (the reader
  shares the 2 cores with counting). Memory does not grow with the file: three chunks of 52 MiB
  plus the counters.
* Counting: int32 counters (promoted to int64 for a table only once it has seen 2^31 lookups, so
  no row can overflow), `torch.bincount` for tables smaller than a quarter of the chunk and
  `Tensor.scatter_add_` of ones (int64 indices) for the others, the 26 tables shared between
  two threads (torch releases the GIL), the range checks too. Measured on this machine, 40
  chunks of 2^18 Zipf ids per table, one thread: into the 11-49M-row tables `scatter_add_`
  110-131 M ids/s (the int64 cast included) against `index_add_` 68-84 M ids/s (what this
  used before; `put_(accumulate=True)` 45, `np.add.at` 8-11); into the small tables
  `bincount` and `index_add_` both 600-800 M ids/s. Huge pages for the counters
  (`MADV_HUGEPAGE`) gave `index_add_` +15% alone but cost as much in page faults: not used.
  The transposed chunk is checked and counted in place; checking ids while transposing, or
  counting straight from the row-major mapping, were measured no faster (strided indices make
  `index_add_` 2x slower).
* The counts the planner reads (`counts(table)`) are int64 copies.

### Where the CLI's time went, and what changed

Second round (this table's 'before' is commit 46080e0, the end of the first round): counting
moved from `index_add_` to `scatter_add_` (above); the `profile` command sets torch's intra-op
threads to 1 (the profile already counts tables on its own two threads; torch's OpenMP team
inside each of them oversubscribed the cores: 1.1 s of CPU, 0.6 s of wall time), freezes the
objects its imports made out of the garbage collector's scans (1.5% of the CPU went to full
collections revisiting torch's objects), checks a chunk's ids on the same two threads and reads
chunks of 2^19 samples instead of 2^18 (half the hand-offs to the threads: 0.25 s). After the
counting, the summary comes first and computes the tables' hot shares on two threads (0.28 ->
0.13 s); it finds each table's counted rows a slice at a time into arrays of their final size
and dtype (uint32 rows; int32 counts that need uint32 are a view, not a copy: before, an int64
array of all counted rows and two narrowing copies, whose fresh pages the kernel had to zero:
about half of the save); the save reuses them, encodes on two threads and writes each array from
its own memory (`np.savez` copied every byte twice: nditer's buffer, then `tobytes`). The file
is the same byte for byte. Measured and not used: huge pages for the counters, checking ids
during the transpose, counting from the row-major mapping (above), 2^20-sample chunks (no
faster, +170 MB), a single OpenBLAS thread (no difference). Not tried: letting `bincount`'s own
range pass stand in for the check of the small tables (about 2.5% of the CPU).

First round:

Before, the command spent as long around the counting as in it: its imports pulled in TorchRec
(torchrec.distributed, fbgemm_gpu, tensordict, torch._dynamo: about 2.5 s of CPU, more than
torch itself), the printed summary made an int64 copy of every row of every table (178M rows)
to compute hot shares (5 s on a loaded machine), and the save wrote 725 MB of dense int32
counts, mostly zeros. Now: the `profile` command imports no TorchRec (names of `torchrec_hot`
load on first use; a test runs the command in a fresh interpreter and checks), the hot shares
read only the counted rows (found once per table, on 2 threads, and shared with the save), and
the file holds those rows sparsely (profile format 3, `profiling/count_codec.py`: per table,
ascending uint32 rows and counts in the narrowest unsigned dtype, or dense narrowed counts when
that is smaller; zlib compression was measured and not used: 2.6x smaller again on the
Kaggle-shaped profile, but 0.44 s instead of 0.01 s to save it, seconds on the benchmark one).
Loading scatters the stored counts straight into int32 counters (before: an int64 copy of
every row, then a cast back).

### Sketch choice

Apache DataSketches' frequent-items sketch is the maintained library for this, but its Python
binding updates one item per call (the table above): far below the throughput bar. The sketch
here is the same algorithm family (Misra-Gries, mergeable, deterministic error bound D <=
T / (capacity + 1)) applied to a whole chunk at once with numpy: the chunk is reduced to
(id, count) pairs with `np.sort` (20x faster than `torch.unique` on this CPU), matched to the
tracked ids by `searchsorted`, and when more than `capacity` ids are tracked the
(capacity + 1)-th largest count is subtracted from all (`np.partition`); tracked ids stay sorted
by an O(n) merge (`np.insert`). Each profile records per table whether it is exact or
sketched, and the bound D.
"""
