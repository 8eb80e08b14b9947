"""HotPlanner's per-table strategy choice vs single strategies, stock TorchRec and all-HBM.

    .venv/bin/python benchmarks/bench_planner.py            # full: Kaggle + Terabyte, scale 1
    .venv/bin/python benchmarks/bench_planner.py --quick    # smoke: Kaggle x 0.05, few batches

What is measured (modeled, not run: no GPU is needed). Criteo-Kaggle- (33.8M rows) and
Criteo-Terabyte-shaped (26 tables, 178M rows) synthetic tables of dim 128
(`criteo_tables`), 8 H100-like ranks (`make_topology(8, "cuda")`), batch 8192 per rank,
row-wise Adagrad. Workloads (`workload_batches`, one id per feature and sample):
  zipf-1.05, zipf-1.2   every table stable Zipf(alpha);
  drift                 Zipf 1.05, the 5 largest tables get new hot ids in every window;
  session               Zipf 1.05, the 5 largest tables draw from a pool of active ids that
                        turns over (temporal locality).
Per workload one profile (window 0, counts only) and one hold-out (window 1, its id trace kept
whole), reused for HBM budgets of 1%, 5% and 20% of all tables' bytes (weights + row-wise
state: rows x (dim x 4 + 4)), split evenly over the ranks. Each budget runs
`HotPlanner(..., strategies=StrategyOptions(holdout=...)).plan(tables, profile)` and reads
`plan.strategies` (StrategySummary): modeled embedding ms per step, HBM hit rate and host-link
bytes for ours, every single strategy, stock TorchRec's plan, stock TorchRec's embedding
offloading ("tuned stock", `planner/offload.py`) and all-HBM. Each `plan()` call is timed,
with the strategy evaluation (trace simulation) and both stock comparisons timed apart (by
wrapping them). At the 5% budget also the choice under 0-4x the cache-machinery constants, and per
workload the modeled replication of hot rows at 8 and 64 ranks (`bench_planner_models.py`).

Prints the tables, writes section `bench_planner` of docs/BENCHMARKS.md and
docs/bench_planner.png (modeled ms per step per strategy vs budget, one panel per
dataset/workload), and the raw results to /tmp/bench_planner.json. Not a test.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_planner_models import machinery_sensitivity, replication
from bench_planner_report import markdown, plot
from doc_sections import machine, write_section
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
PNG = ROOT / "docs" / "bench_planner.png"
RAW = Path("/tmp/bench_planner.json")
WORLD, BATCH, DIM = 8, 8192, 128
BUDGETS = (0.01, 0.05, 0.20)
SENSITIVITY_BUDGETS = (0.05,)  # budgets whose choice is redone under 0-4x cache machinery
DEVICE_HBM_WORKLOAD = "zipf-1.05"  # also planned with the 1% as the whole device HBM
LARGEST = 5  # tables that drift / have sessions
RESERVATION = 0.15  # TorchRec's default storage reservation
TUNED = "stock TorchRec, embedding offloading"  # evaluation.TUNED_STOCK


@dataclass(frozen=True)
class Workload:
    """One input: Zipf exponent and which tables are not stable."""

    name: str
    alpha: float
    kind: str | None  # "drift" / "session" for the LARGEST tables, None: all stable


WORKLOADS = (
    Workload("zipf-1.05", 1.05, None),
    Workload("zipf-1.2", 1.2, None),
    Workload("drift", 1.05, "drift"),
    Workload("session", 1.05, "session"),
)


class Timers:
    """Seconds spent in the planner's phases during one `plan()` call (by wrapping them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.evaluation: Any = None

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed


def install_timers() -> Timers:
    """Wraps the stock comparison and the strategy evaluation as `hot_planner` calls them."""
    from torchrec_hot.planner import hot_planner

    timers = Timers()
    hot_planner.compare_with_stock = timers.wrap("stock", hot_planner.compare_with_stock)
    hot_planner.compare_with_tuned_stock = timers.wrap(
        "tuned", hot_planner.compare_with_tuned_stock
    )
    evaluation = hot_planner.StrategyEvaluation

    class TimedEvaluation(evaluation):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            timers.wrap("evaluate", super().__init__)(*args, **kwargs)
            timers.evaluation = self  # the last plan's, for the machinery sensitivity

    hot_planner.StrategyEvaluation = TimedEvaluation
    return timers


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def profiles(
    tables: list, workload: Workload, profile_batches: int, holdout_batches: int, seed: int
) -> tuple[Any, Any, float]:
    """(profile of window 0, hold-out of window 1 with its whole trace, seconds)."""
    from torchrec_hot import PopularityProfile
    from torchrec_hot.data.workloads import workload_batches

    by_size = sorted(tables, key=lambda t: -t.num_embeddings)[:LARGEST]
    kinds = {t.name: workload.kind for t in by_size} if workload.kind else {}
    glob = WORLD * BATCH
    start = time.perf_counter()

    def batches(n: int, window: int, label: str) -> Iterator:
        it = workload_batches(tables, n, glob, workload.alpha, kinds, window, seed)
        return tqdm(it, total=n, desc=f"  {workload.name} {label}", leave=False, file=sys.stderr)

    profile = PopularityProfile(tables, trace_max_ids=0)
    profile.update_all(batches(profile_batches, 0, "profile"))
    trace_ids = holdout_batches * glob * len(tables)
    holdout = PopularityProfile(
        tables, trace_max_ids=trace_ids, trace_run_batches=holdout_batches
    )
    holdout.update_all(batches(holdout_batches, 1, "hold-out"))
    return profile, holdout, time.perf_counter() - start


def plan_once(
    tables: list, profile: Any, holdout: Any, budget: int, timers: Timers
) -> tuple[Any, dict[str, float]]:
    """One timed `HotPlanner.plan` call; returns the plan and its phase seconds. `budget` bytes
    per rank are the row budget; TorchRec's I/O buffers are allowed on top, for ours and for
    stock alike (`HotPlanner._stock_topology`)."""
    from torchrec.optim import RowWiseAdagrad

    from torchrec_hot import HotPlanner, make_topology
    from torchrec_hot.planner.strategy.evaluation import StrategyOptions

    planner = HotPlanner(
        make_topology(WORLD, "cuda"), budget, batch_size=BATCH, optimizer_class=RowWiseAdagrad,
        strategies=StrategyOptions(holdout=holdout),
    )  # fmt: skip
    timers.seconds = {}
    start, cpu = time.perf_counter(), time.process_time()
    plan = planner.plan(tables, profile)
    seconds = dict(timers.seconds, total=time.perf_counter() - start,
                   cpu=time.process_time() - cpu)  # fmt: skip
    return plan, seconds


def device_hbm_row(
    dataset: str, tables: list, profile: Any, holdout: Any, total: int
) -> dict[str, Any]:
    """Ours and stock on one device whose usable HBM (after TorchRec's 15% reservation) is the
    1% budget itself, TorchRec's I/O buffers included, as in the issue's measured facts: each
    planner's result or its error."""
    from torchrec.optim import RowWiseAdagrad

    from torchrec_hot import HotPlanner, PlanDoesNotFitError, make_topology
    from torchrec_hot.planner.memory import row_bytes, topology_with_hbm
    from torchrec_hot.planner.stock import compare_with_stock
    from torchrec_hot.planner.strategy.evaluation import StrategyOptions

    budget = int(BUDGETS[0] * total / WORLD)
    topology = topology_with_hbm(
        make_topology(WORLD, "cuda"), math.ceil(budget / (1.0 - RESERVATION))
    )
    stock = compare_with_stock(
        {"": tables}, {t.name: profile.counts(t.name) for t in tables},
        {t.name: row_bytes(t, RowWiseAdagrad) for t in tables}, topology, BATCH, RESERVATION,
        RowWiseAdagrad,
    )  # fmt: skip
    row: dict[str, Any] = {"dataset": dataset, "budget_per_rank": budget,
                           "stock_error": stock.error, "ours_error": None}  # fmt: skip
    try:
        plan = HotPlanner(
            topology, None, batch_size=BATCH, optimizer_class=RowWiseAdagrad,
            compare_with_stock=False, strategies=StrategyOptions(holdout=holdout),
            reservation_percentage=RESERVATION,
        ).plan(tables, profile)  # fmt: skip
        row["ours_row_budget"] = plan.hbm_budget_bytes
        row["ours_ms"] = plan.strategies.model_ms["ours"]
    except PlanDoesNotFitError as e:
        row["ours_error"] = str(e)
    return row


def tuned_fields(plan: Any) -> dict[str, Any]:
    """TorchRec embedding offloading's plan in brief: error, HBM rows (all ranks) beside ours,
    kernels, and the load factor of each cached table."""
    from torchrec_hot.planner.plan_io import parameter_shardings

    tuned = plan.tuned_stock
    out: dict[str, Any] = {"tuned_error": tuned.error if tuned else "not computed",
                           "ours_hbm_total": sum(plan.hbm_bytes_per_rank)}  # fmt: skip
    if tuned is None or tuned.sharding_plan is None:
        return out
    module = parameter_shardings(tuned.sharding_plan)
    out["tuned_hbm_total"] = sum(tuned.hbm_bytes_per_rank)
    out["tuned_hbm_max"] = max(tuned.hbm_bytes_per_rank)
    out["tuned_kernels"] = dict(Counter(ps.compute_kernel for ps in module.values()))
    out["tuned_clf"] = {
        name: ps.cache_params.load_factor
        for name, ps in module.items()
        if ps.compute_kernel == "fused_uvm_caching" and ps.cache_params
    }
    return out


def result_row(
    dataset: str, workload: Workload, share: float, plan: Any, seconds: dict[str, float]
) -> dict[str, Any]:
    s = plan.strategies
    samples = WORLD * BATCH
    return {
        **tuned_fields(plan),
        "dataset": dataset,
        "workload": workload.name,
        "budget": share,
        "budget_per_rank": plan.hbm_budget_bytes,
        "hbm_used_per_rank_max": max(plan.hbm_bytes_per_rank),
        "ms": dict(s.model_ms),
        "hit": dict(s.model_hit_rate),
        "link_per_sample": {k: v / samples for k, v in s.model_link_bytes.items()},
        "chosen": dict(Counter(t.strategy for t in s.tables)),
        "stock_error": plan.stock.error if plan.stock is not None else None,
        "notes": list(s.notes),
        "seconds": seconds,
    }


def run(
    args: argparse.Namespace, checkpoint: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    from torchrec.optim import RowWiseAdagrad

    from torchrec_hot.data.synthetic import criteo_tables
    from torchrec_hot.planner.memory import row_bytes

    timers = install_timers()
    datasets = [("criteo-kaggle", args.scale)] if args.quick else [
        ("criteo-terabyte", 1.0), ("criteo-kaggle", 1.0)]  # fmt: skip
    if args.datasets:
        datasets = [d for d in datasets if d[0] in args.datasets]
    workloads = [w for w in WORKLOADS if not args.workloads or w.name in args.workloads]
    rows: list[dict[str, Any]] = []
    device_rows: list[dict[str, Any]] = []
    replicated: list[dict[str, Any]] = []
    configs = [(d, w) for d in datasets for w in workloads]
    bar = tqdm(total=len(configs) * len(BUDGETS), desc="plans", file=sys.stderr)
    for (dataset, scale), workload in configs:
        tables = criteo_tables(dataset, scale, embedding_dim=DIM)
        total = sum(t.num_embeddings * row_bytes(t, RowWiseAdagrad) for t in tables)
        profile, holdout, gen_s = profiles(
            tables, workload, args.profile_batches, args.holdout_batches, args.seed
        )
        for share in BUDGETS:
            budget = int(share * total / WORLD)
            plan, seconds = plan_once(tables, profile, holdout, budget, timers)
            seconds["inputs"] = gen_s
            rows.append(result_row(dataset, workload, share, plan, seconds))
            r = rows[-1]
            if share in SENSITIVITY_BUDGETS:  # 5 more choices each: the middle budget only
                start = time.perf_counter()
                r["sensitivity"] = machinery_sensitivity(timers.evaluation, plan, WORLD)
                seconds["sensitivity"] = time.perf_counter() - start
            tqdm.write(
                f"{dataset} {workload.name} {share:.0%}: ours {r['ms']['ours']:.3f} ms, "
                f"stock {r['ms']['stock TorchRec']:.3f}, tuned {r['ms'][TUNED]:.3f}, "
                f"all-HBM {r['ms']['all HBM (limit)']:.3f}; plan {seconds['total']:.1f} s "
                f"(stock {seconds.get('stock', 0):.1f} s, tuned {seconds.get('tuned', 0):.1f} s"
                f"); peak RSS {peak_rss_gib():.1f} GiB",
                file=sys.stderr,
            )
            del plan
            bar.update()
        replicated.append({"dataset": dataset, "workload": workload.name,
                           "setups": replication(tables, profile, holdout, BATCH)})  # fmt: skip
        if workload.name == DEVICE_HBM_WORKLOAD:  # identical device HBM for ours and stock
            device_rows.append(device_hbm_row(dataset, tables, profile, holdout, total))
            tqdm.write(f"{dataset} {workload.name} 1% as device HBM: {device_rows[-1]}",
                       file=sys.stderr)  # fmt: skip
        del profile, holdout
        gc.collect()
        if checkpoint is not None:  # partial results survive an interrupted run
            checkpoint({"rows": rows, "device_rows": device_rows, "replication": replicated,
                        "peak_rss_gib": peak_rss_gib()})  # fmt: skip
    bar.close()
    return {"rows": rows, "device_rows": device_rows, "replication": replicated,
            "peak_rss_gib": peak_rss_gib()}  # fmt: skip


def workload_parser(description: str) -> argparse.ArgumentParser:
    """The options bench_planner shares with bench_allocation (its workloads, batches, docs)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="Kaggle x --scale only, few batches")
    p.add_argument("--scale", type=float, default=0.05, help="table scale of --quick")
    p.add_argument("--profile-batches", type=int, default=None,
                   help="global batches profiled (window 0); default 64, --quick 8")
    p.add_argument("--holdout-batches", type=int, default=None,
                   help="held-out global batches traced (window 1); default 16, --quick 8")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-doc", action="store_true", help="do not write docs/")
    p.add_argument("--from-json", type=Path, default=None,
                   help="re-render docs from a results file of an earlier run, measure nothing")
    return p


def parse_workload_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """`p`'s arguments, the batch counts defaulted by --quick."""
    args = p.parse_args(argv)
    if args.profile_batches is None:
        args.profile_batches = 8 if args.quick else 64
    if args.holdout_batches is None:
        args.holdout_batches = 8 if args.quick else 16
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = workload_parser(__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="*", default=None,
                   help="only these of criteo-terabyte / criteo-kaggle (default: all)")
    p.add_argument("--workloads", nargs="*", default=None,
                   help="only these workloads (default: all)")
    return parse_workload_args(p, argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    command = " ".join(["python", *sys.argv])

    def write(results: dict[str, Any], final: bool = False) -> None:
        results["args"] = {k: v for k, v in vars(args).items() if k != "from_json"}
        results["args"].pop("no_doc", None)
        results["command"] = command
        results["wall_s"] = time.perf_counter() - start
        results["complete"] = final
        if args.from_json is None:
            RAW.write_text(json.dumps(results, indent=1))
        text = markdown(results, machine(), command)
        if final or args.from_json is not None:
            print(text)
        if not args.no_doc:
            write_section("bench_planner", text)
            plot(results["rows"], PNG)

    if args.from_json is not None:
        results = json.loads(args.from_json.read_text())
        args = argparse.Namespace(**{**results["args"], "no_doc": args.no_doc,
                                     "from_json": args.from_json})
        command = results.get("command", "python benchmarks/bench_planner.py")
        wall = results["wall_s"]
        start = time.perf_counter() - wall
        write(results, final=results.get("complete", False))
    else:
        write(run(args, write), final=True)
    if not args.no_doc:
        print(f"wrote docs/BENCHMARKS.md (section bench_planner) and {PNG.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
