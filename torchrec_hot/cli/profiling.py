"""The profiling commands of the CLI: `profile`, `merge`, `evaluate`, `plot` (arguments and
what they run; `torchrec_hot.cli.main` wires them in)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from torchrec_hot.data.chunk import FeatureIds, IdChunk, IdOutOfRangeError
from torchrec_hot.data.readers import DEFAULT_CHUNK_SAMPLES, FORMATS, Source, open_source
from torchrec_hot.data.synthetic import WORKLOADS, criteo_tables, workload_rows
from torchrec_hot.profiling.distributed import all_reduce_profile
from torchrec_hot.profiling.io import load_profile, save_profile
from torchrec_hot.profiling.merge import merge_profiles
from torchrec_hot.profiling.profile import DEFAULT_TRACE_IDS, PopularityProfile
from torchrec_hot.profiling.summary import format_summary, profile_summary
from torchrec_hot.tables.spec import TableSpec

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """ "4G", "512MiB", "1.5g", "1000" -> bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4G, 512M, 1000000)")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def add_profile_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", help="input files (.npy, .npz, .parquet, .csv)")
    p.add_argument("--embedding-dim", type=int, default=128,
                   help="dim recorded per table (any input; a --table-map's own dims win)")
    src = p.add_argument_group("synthetic input (instead of files)")
    src.add_argument("--synthetic", choices=sorted(WORKLOADS), help="Zipf ids, Criteo tables")
    src.add_argument("--scale", type=float, default=1.0, help="multiply every table's rows")
    src.add_argument("--alpha", type=float, default=1.1, help="Zipf exponent")
    src.add_argument("--batches", type=int, help="batches to draw")
    src.add_argument("--drift-tables", default="", help="tables whose hot ids move per window")
    src.add_argument("--synthetic-window", type=int, default=None, help="which window to draw")
    files = p.add_argument_group("file input")
    files.add_argument("--format", choices=FORMATS, default="auto")
    files.add_argument("--columns", default=None, help="comma-separated columns to read")
    files.add_argument("--table-map", default=None, help="JSON: tables, rows and their columns")
    files.add_argument("--workload", choices=sorted(WORKLOADS), help="rows per column: Criteo")
    files.add_argument("--rows", default=None, help="comma-separated rows per column")
    files.add_argument("--hash-ids", action="store_true",
                       help="count id %% rows, for raw (hashed) Criteo ids, as TorchRec's "
                       "datapipe hashes= does")
    files.add_argument("--chunk-samples", type=int, default=DEFAULT_CHUNK_SAMPLES)
    how = p.add_argument_group("how to count")
    how.add_argument("--sample-rate", type=float, default=1.0, help="share of samples counted")
    how.add_argument("--max-memory", type=parse_bytes, default=None, help="counter bytes/window")
    how.add_argument("--window", default=None, help="window name for all input")
    how.add_argument("--window-per-file", action="store_true", help="one window per file")
    how.add_argument("--window-samples", type=int, default=None, help="new window every N")
    how.add_argument("--trace-ids", type=int, default=DEFAULT_TRACE_IDS, help="ids kept")
    how.add_argument("--batch-size", type=int, default=8192, help="samples per (trace) batch")
    how.add_argument("--distributed", action="store_true", help="under torchrun: merge ranks")
    how.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)


def _tables_for_files(args: argparse.Namespace, source: Source) -> list[TableSpec]:
    """Tables for file input: from --table-map, else one per column (rows from --rows,
    --workload, or the input's largest ids)."""
    dim = args.embedding_dim
    if args.table_map:
        spec = json.loads(Path(args.table_map).read_text())
        tables = [
            TableSpec(
                t["name"],
                int(t["num_embeddings"]),
                int(t.get("embedding_dim", dim)),
                tuple(t["columns"]),
            )
            for t in spec["tables"]
        ]
        missing = [c for t in tables for c in t.feature_names if c not in source.columns]
        if missing:
            raise ValueError(f"table map columns {missing} are not in the input {source.columns}")
        return tables
    cols = source.columns
    if args.rows:
        rows = [int(r) for r in args.rows.split(",")]
    elif args.workload:
        rows = workload_rows(args.workload, args.scale)
    else:
        rows = _infer_rows(source, args.chunk_samples)
        print(f"rows per column inferred from the input (max id + 1): {rows}", file=sys.stderr)
    if len(rows) != len(cols):
        raise ValueError(f"{len(rows)} row counts for {len(cols)} columns {cols}")
    return [TableSpec(f"t_{c}", n, dim, (c,)) for c, n in zip(cols, rows, strict=True)]


def _infer_rows(source: Source, chunk_samples: int) -> list[int]:
    high = dict.fromkeys(source.columns, 0)
    bar = tqdm(source.chunks(chunk_samples), unit="chunk", desc="finding rows", file=sys.stderr,
               mininterval=0.5)
    for chunk in bar:
        for name, f in chunk.features.items():
            if f.values.numel():
                high[name] = max(high[name], int(f.values.max()) + 1)
    return [max(1, high[c]) for c in source.columns]


def _hashed(chunk: IdChunk, rows: dict[str, int]) -> IdChunk:
    feats = {
        n: FeatureIds(torch.remainder(f.values, rows[n]), f.lengths)
        for n, f in chunk.features.items()
    }
    return IdChunk(chunk.num_samples, feats)


def _file_chunks(args, profile, rank: int, world: int) -> Iterator[tuple[str | None, IdChunk]]:
    """(window, chunk) pairs of the input files, windows as the arguments ask."""
    rows = {f: t.num_embeddings for t in profile.tables for f in t.feature_names}
    groups = [[f] for f in args.files] if args.window_per_file else [args.files]
    seen = 0
    for group in groups:
        source = open_source(group, args.format, _columns(args, profile))
        window = Path(group[0]).stem if args.window_per_file else args.window
        for chunk in source.chunks(args.chunk_samples, rank, world):
            if args.window_samples:
                window = f"w{seen // args.window_samples}"
            seen += chunk.num_samples * world
            yield window, _hashed(chunk, rows) if args.hash_ids else chunk


def _columns(args, profile: PopularityProfile) -> list[str] | None:
    if args.columns:
        return args.columns.split(",")
    if args.table_map:
        return [f for t in profile.tables for f in t.feature_names]
    return None


def run_profile(args: argparse.Namespace) -> int:
    if bool(args.files) == bool(args.synthetic):
        raise ValueError("give input files or --synthetic (not both)")
    # the profile counts its tables on its own threads; torch's intra-op threads inside each
    # of them would oversubscribe the cores (measured: 1.1 CPU-s more, 0.6 s slower, 2 cores)
    torch.set_num_threads(1)
    rank, world = 0, 1
    if args.distributed:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    if args.synthetic:
        if not args.batches:
            raise ValueError("--synthetic needs --batches")
        tables = [
            TableSpec.from_config(c)
            for c in criteo_tables(args.synthetic, args.scale, args.embedding_dim)
        ]
        total = args.batches * args.batch_size * len(tables) // world
    else:
        columns = args.columns.split(",") if args.columns else None
        source = open_source(args.files, args.format, columns)
        tables = _tables_for_files(args, source)
        total = source.num_samples * len(source.columns) // world if source.num_samples else None
    profile = PopularityProfile(
        tables,
        max_memory_bytes=args.max_memory,
        sample_rate=args.sample_rate,
        seed=args.seed,
        rank=rank,
        trace_max_ids=args.trace_ids,
    )
    start = time.perf_counter()
    bar = tqdm(
        total=total,
        unit="id",
        unit_scale=True,
        desc="profiling",
        file=sys.stderr,
        mininterval=0.5,
        disable=rank != 0,
    )
    with bar:
        if args.synthetic:
            for kjt in _synthetic(args, tables, rank, world):
                profile.update(kjt, args.window)
                bar.update(int(kjt.values().numel()))
        else:
            for window, chunk in _file_chunks(args, profile, rank, world):
                try:
                    profile.update_chunk(chunk, window, args.batch_size)
                except IdOutOfRangeError as e:
                    if e.value < e.num_rows:
                        raise
                    raise ValueError(
                        f"{e}. Raw Criteo ids are 32-bit hashes, not row numbers: --hash-ids "
                        "counts id % rows, as TorchRec's Criteo datapipe (hashes=) does"
                    ) from e
                bar.update(chunk.num_ids)
    if args.distributed:
        all_reduce_profile(profile)
    seconds = time.perf_counter() - start
    if rank == 0:
        summary = profile_summary(profile)  # finds the tables' counted rows; the save reuses them
        save_profile(profile, args.out)
        print(format_summary(summary, profile))
        rows = sum(t.num_embeddings for t in tables)
        print(
            f"profiled {profile.num_batches} batches, {profile.num_samples:,} samples, "
            f"{len(tables)} tables ({rows:,} rows) in {seconds:.1f} s -> {args.out}"
        )
    return 0


def _synthetic(args, tables: list[TableSpec], rank: int, world: int):
    from torchrec_hot.data.workloads import window_batches  # TorchRec: KJTs

    configs = criteo_tables(args.synthetic, args.scale, args.embedding_dim)
    drift = [t for t in args.drift_tables.split(",") if t]
    batches = window_batches(
        configs,
        args.batches,
        args.batch_size,
        args.alpha,
        args.synthetic_window or 0,
        drift,
        args.seed,
    )
    for i, kjt in enumerate(batches):
        if i % world == rank:
            yield kjt


def add_merge_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("profiles", nargs="+", help="profiles to merge (windows of one name add up)")
    p.add_argument("--out", required=True)


def run_merge(args: argparse.Namespace) -> int:
    merged = merge_profiles(*[load_profile(p) for p in args.profiles])
    save_profile(merged, args.out)
    print(format_summary(profile_summary(merged), merged))
    print(f"merged {len(args.profiles)} profiles -> {args.out}")
    return 0


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True, help="profile the plan is made from")
    p.add_argument(
        "--holdout",
        default=None,
        help="profile of held-out input (default: the "
        "profile's last window, the earlier ones being the profiling window)",
    )
    p.add_argument("--window", default=None, help="profiling window(s), comma-separated")
    p.add_argument("--holdout-window", default=None, help="held-out window(s), comma-separated")
    p.add_argument("--plan", default=None, help="a plan.json: also evaluate its hot rows")
    p.add_argument("--budgets", default="0.01,0.05,0.2", help="HBM shares of all tables' bytes")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 if a table drifts")


def _windows(text: str | None) -> list[str] | None:
    return text.split(",") if text else None


def run_evaluate(args: argparse.Namespace) -> int:
    from torchrec_hot.evaluate import (
        budget_hot_rows,
        drifting_tables,
        evaluate_drift,
        format_drift,
    )

    profile = load_profile(args.profile)
    window, held_window = _windows(args.window), _windows(args.holdout_window)
    if args.holdout:
        holdout = load_profile(args.holdout)
        profile.check_matches(holdout.tables)
    else:
        if len(profile.windows) < 2:
            raise ValueError("the profile has one window: pass --holdout (a held-out profile)")
        holdout = profile
        held_window = held_window or [profile.windows[-1]]
        window = window or [w for w in profile.windows if w not in held_window]
    budgets = [float(b) for b in args.budgets.split(",") if b]
    hot_rows = budget_hot_rows(profile, budgets, window)
    hot_ids = None
    if args.plan:
        from torchrec_hot.planner.hot_plan import HotPlan

        plan = HotPlan.from_json(args.plan)
        hot_ids = {t.name: np.asarray(t.hot_ids) for t in plan.tables}
        hot_rows = {"plan": {t.name: t.hot_rows for t in plan.tables}, **hot_rows}
    rows = evaluate_drift(profile, holdout, hot_rows, hot_ids, window, held_window)
    print(format_drift(rows))
    return 1 if args.fail_on_drift and drifting_tables(rows) else 0


def add_plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", required=True)
    p.add_argument("--holdout", default=None, help="held-out profile (default: last window)")
    p.add_argument("--tables", default=None, help="comma-separated tables (default: all)")
    p.add_argument("--out-dir", required=True)


def run_plot(args: argparse.Namespace) -> int:
    from torchrec_hot.plots import plot_coverage

    profile = load_profile(args.profile)
    holdout, window, held = None, None, None
    if args.holdout:
        holdout = load_profile(args.holdout)
        profile.check_matches(holdout.tables)
    elif len(profile.windows) > 1:
        holdout, held = profile, [profile.windows[-1]]
        window = profile.windows[:-1]
    tables = args.tables.split(",") if args.tables else None
    paths = plot_coverage(profile, args.out_dir, holdout, window, held, tables)
    print(f"wrote {len(paths)} PNGs to {args.out_dir} (overview: {paths[-1].name})")
    return 0
