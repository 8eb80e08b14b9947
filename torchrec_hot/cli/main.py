"""`torchrec-hot profile | merge | evaluate | plot | plan | report`: the command line.

    torchrec-hot profile --synthetic criteo-kaggle --scale 0.1 --batches 100 \
        --batch-size 8192 --out profile.npz
    torchrec-hot profile day_0_sparse.npy --workload criteo-terabyte --hash-ids \
        --sample-rate 0.05 --max-memory 2G --out day0.npz
    torchrec-hot profile day_1_sparse.npy --workload criteo-terabyte --hash-ids --out day1.npz
    torchrec-hot evaluate --profile day0.npz --holdout day1.npz
    torchrec-hot plot --profile day0.npz --holdout day1.npz --out-dir coverage/
    torchrec-hot plan --profile profile.npz --world-size 8 --hbm-gb 0.25 --out plan.json
    torchrec-hot plan --profile day0.npz --holdout day1.npz --world-size 8 --hbm-gb 4 \
        --out plan.json    # per table: static split, UVM cache or look-forward prefetch
    torchrec-hot report plan.json
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

# torch.fx warns at import time that TorchRec calls a deprecated helper; not the user's concern.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

from torchrec_hot.cli import profiling as commands  # noqa: E402
from torchrec_hot.profiling.io import load_profile  # noqa: E402
from torchrec_hot.tables.spec import TableSpec  # noqa: E402

# The planner, the report and TorchRec are imported by the commands that use them: `profile`
# never imports TorchRec (about 2 s of a run's start-up, docs/BENCHMARKS.md).
if TYPE_CHECKING:
    import torch

    from torchrec_hot.planner.strategy.evaluation import StrategyOptions

_OPTIMIZERS = ("rowwise_adagrad", "sgd", "adam", "none")
HARDWARE = ("a100", "h100", "v100")  # planner.strategy.cost_model's specs, by name


def _optimizer_class(name: str) -> type[torch.optim.Optimizer] | None:
    import torch
    from torchrec.optim import RowWiseAdagrad

    return {
        "rowwise_adagrad": RowWiseAdagrad,
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "none": None,
    }[name]


def _cmd_plan(args: argparse.Namespace) -> int:
    from torchrec_hot.planner.hot_planner import HotPlanner
    from torchrec_hot.planner.memory import GIB, make_topology
    from torchrec_hot.report.rows import build_report
    from torchrec_hot.report.text import format_report

    profile = load_profile(args.profile)
    dims = args.embedding_dim
    tables = [
        TableSpec(t.name, t.num_embeddings, dims or t.embedding_dim, t.feature_names)
        for t in profile.tables
    ]
    modules = _modules(args, tables)
    hbm_cap = int(args.hbm_cap_gb * GIB) if args.hbm_cap_gb is not None else None
    topology = make_topology(
        args.world_size,
        args.compute_device,
        hbm_cap=hbm_cap,
        ddr_cap=int(args.ddr_gb * GIB) if args.ddr_gb else None,
        local_world_size=args.local_world_size,
    )
    planner = HotPlanner(
        topology,
        hbm_budget_bytes=int(args.hbm_gb * GIB) if args.hbm_gb is not None else None,
        batch_size=args.batch_size,
        optimizer_class=_optimizer_class(args.optimizer),
        compare_with_stock=not args.no_stock,
        strategies=_strategy_options(args),
        rank_rows_by=args.rank_rows_by,
    )
    start = time.perf_counter()
    plan = planner.plan(modules, profile)
    seconds = time.perf_counter() - start
    plan.to_json(args.out)
    print(format_report(build_report(plan)))
    print(f"\nplanned in {seconds:.1f} s -> {args.out}")
    return 0


def _modules(args: argparse.Namespace, tables: list[TableSpec]) -> dict[str, list]:
    """Module path -> table configs: the tables `--module` / `--sequence-module` name (PATH=T1,T2;
    EmbeddingBagCollection / EmbeddingCollection tables), every other one at `--module-path`.
    ValueError for a table named twice or not in the profile."""
    from torchrec import EmbeddingBagConfig, EmbeddingConfig

    by_name = {t.name: t for t in tables}
    kinds: dict[str, tuple[str, type]] = {}
    for specs, kind in ((args.module, EmbeddingBagConfig), (args.sequence_module, EmbeddingConfig)):
        for spec in specs:
            path, sep, names = spec.partition("=")
            if not sep or not names:
                raise ValueError(f"--module / --sequence-module take PATH=T1,T2, got {spec!r}")
            for name in names.split(","):
                if name not in by_name:
                    raise ValueError(f"{spec!r}: table {name!r} is not in the profile")
                if name in kinds:
                    raise ValueError(f"table {name!r} is named for two modules")
                kinds[name] = (path, kind)
    modules: dict[str, list] = {}
    for t in tables:
        path, kind = kinds.get(t.name, (args.module_path, EmbeddingBagConfig))
        modules.setdefault(path, []).append(
            kind(name=t.name, num_embeddings=t.num_embeddings, embedding_dim=t.embedding_dim,
                 feature_names=list(t.feature_names))
        )
    return modules


def _strategy_options(args: argparse.Namespace) -> StrategyOptions | None:
    """Per-table strategies when asked for (`--strategies`, or implied by `--holdout`)."""
    if not (args.strategies or args.holdout):
        return None
    from torchrec_hot.planner.strategy import cost_model
    from torchrec_hot.planner.strategy.evaluation import StrategyOptions

    holdout = load_profile(args.holdout) if args.holdout else None
    return StrategyOptions(
        hardware=getattr(cost_model, args.hardware.upper()),
        look_ahead=args.look_ahead,
        holdout=holdout,
        dense_ms=args.dense_ms,
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from torchrec_hot.planner.hot_plan import HotPlan
    from torchrec_hot.report.rows import build_report
    from torchrec_hot.report.text import format_report

    print(format_report(build_report(HotPlan.from_json(args.plan))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="torchrec-hot", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("profile", help="count row lookups per table into a profile .npz")
    commands.add_profile_arguments(p)
    p.set_defaults(func=commands.run_profile)

    p = sub.add_parser("merge", help="merge profiles made separately into one")
    commands.add_merge_arguments(p)
    p.set_defaults(func=commands.run_merge)

    p = sub.add_parser("evaluate", help="predicted vs held-out hot shares; flags drifting tables")
    commands.add_evaluate_arguments(p)
    p.set_defaults(func=commands.run_evaluate)

    p = sub.add_parser("plot", help="coverage-curve PNGs: profile window vs held-out window")
    commands.add_plot_arguments(p)
    p.set_defaults(func=commands.run_plot)

    p = sub.add_parser("plan", help="plan hot rows under an HBM budget; prints the report")
    p.add_argument("--profile", required=True)
    p.add_argument("--world-size", type=int, required=True)
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument(
        "--hbm-gb",
        type=float,
        help="GiB of HBM per rank for embedding rows (weights + optimizer "
        "state); TorchRec's own reservations are added on top",
    )
    budget.add_argument(
        "--hbm-cap-gb",
        type=float,
        help="GiB of HBM per GPU; the row budget is what TorchRec leaves",
    )
    p.add_argument("--ddr-gb", type=float, default=None, help="GiB of host memory per rank")
    p.add_argument(
        "--embedding-dim", type=int, default=None, help="override the dims recorded in the profile"
    )
    p.add_argument("--compute-device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--local-world-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8192, help="per-rank batch size")
    p.add_argument("--optimizer", choices=_OPTIMIZERS, default="rowwise_adagrad")
    p.add_argument(
        "--module-path",
        default="",
        help="path of the EmbeddingBagCollection in the model, e.g. "
        "sparse_arch.embedding_bag_collection (of every table no --module names)",
    )
    p.add_argument("--module", action="append", default=[], metavar="PATH=T1,T2",
                   help="these tables are the EmbeddingBagCollection at PATH (repeatable)")
    p.add_argument("--sequence-module", action="append", default=[], metavar="PATH=T1,T2",
                   help="these tables are the EmbeddingCollection at PATH (repeatable)")
    p.add_argument("--no-stock", action="store_true", help="skip the stock TorchRec plan")
    p.add_argument("--rank-rows-by", choices=("counts", "expected"), default="counts",
                   help="a row's worth when tables compete for the budget: its profiled "
                   "lookups, or its Good-Turing expected lookups in new input")
    s = p.add_argument_group("per-table strategies (static split, UVM cache, look-forward)")
    s.add_argument("--strategies", action="store_true",
                   help="choose per table by the cost model on the profile's own trace")
    s.add_argument("--holdout", default=None,
                   help="profile .npz of held-out input (torchrec-hot profile ... --trace-ids N) "
                   "whose trace the strategies are measured on; implies --strategies")
    s.add_argument("--hardware", choices=sorted(HARDWARE), default="h100",
                   help="bandwidth preset of the cost model")
    s.add_argument("--look-ahead", type=int, default=1, help="batches a look-forward cache "
                   "prefetches ahead (1: TorchRec's prefetch pipeline)")
    s.add_argument("--dense-ms", type=float, default=0.0,
                   help="dense compute per step (ms) that can hide prefetches")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_plan)

    p = sub.add_parser("report", help="print the sharding report of a saved plan")
    p.add_argument("plan")
    p.set_defaults(func=_cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the objects imports made (torch's, mostly) never die: out of the collector's scans, which
    # otherwise revisit all of them at every full collection (1.5% of `profile`'s CPU)
    gc.freeze()
    # TorchRec's planner logs advice meant for its own developers; keep the report readable.
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        return int(args.func(args))
    # ProfileFormatError, PlanFormatError and PlanDoesNotFitError are ValueErrors
    except (ValueError, KeyError) as e:
        print(f"torchrec-hot {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
