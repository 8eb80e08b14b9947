"""Train TorchRec's DLRM on synthetic Criteo-shaped data, stock or hot/cold.

    torchrun --nproc_per_node 2 examples/train_dlrm.py --stock
    torchrun --nproc_per_node 2 examples/train_dlrm.py --profile P.npz --hbm-gb 0.002 --compare
    torchrun --nproc_per_node 2 examples/train_dlrm.py --plan plan.json --compare

`--profile` plans the TorchRec way, in the job: `HotShardingPlanner(topology, profile,
hbm_budget_bytes=...).collective_plan(model)` on the model built for training (rank 0 plans,
every rank gets the plan), then `apply_hot_plan(model, planner.hot_plan)` and
`DistributedModelParallel(model, plan=...)`. `--plan` takes a plan made beforehand
(`torchrec-hot plan ... --module-path model.sparse_arch.embedding_bag_collection`).

Training runs through TorchRec's `TrainPipelineSparseDist` (the next batch's input dist, and
for hot/cold the id remap, overlap the current batch's forward and backward), or
`PrefetchTrainPipelineSparseDist` on CUDA when a table of the plan is `fused_uvm_caching` with
`cache_params.prefetch_pipeline=True`; `--no-pipeline` trains in a plain loop instead (same
result, bit for bit). `--replan-every N` counts the ids trained on (on the input's device) and
every N steps moves the hot rows to the N steps' most used ids, rows and optimizer state
migrating in memory (the pipeline is drained first and rebuilt after); the logical model is
unchanged, so `--compare` still finds the weights identical.
The dense layers train with Adam (`--dense-optimizer sgd` for SGD) under a linear-warmup +
cosine LR schedule (`--lr-schedule constant` for none); embeddings with row-wise Adagrad fused
into the backward. `--checkpoint-dir` saves the whole training state every `--checkpoint-every`
steps (model, fused and dense optimizer state, LR schedule, RNGs, data position; the newest
`--keep` kept) and resumes from the latest, also at another world size (a note says what
changes).
`--compare` trains stock TorchRec and then the hot/cold model on the same batches in one run and
prints both throughputs and the largest difference between their final logical weights (0 when
training is bit-identical). gloo on CPU, nccl on GPU (one GPU per rank).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig
from torchrec.datasets.utils import Batch
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.types import ShardingPlan
from torchrec.models.dlrm import DLRM, DLRMTrain
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from tqdm import tqdm

from torchrec_hot import (
    HotPlan,
    HotShardingPlanner,
    OnlineCounter,
    apply_hot_plan,
    build_report,
    drain_pipeline,
    format_report,
    hot_cold_modules,
    latest_checkpoint,
    load_checkpoint,
    load_logical_state_dict,
    load_profile,
    logical_optimizer_state,
    logical_state_dict,
    make_topology,
    make_train_pipeline,
    no_restart_on,
    rehot_plan,
    replan,
    replan_pipelined,
    retarget_sharding_plan,
    save_checkpoint,
    uses_cache_prefetch,
)
from torchrec_hot.data import criteo_tables, zipf_batches

MODULE_PATH = "model.sparse_arch.embedding_bag_collection"
DENSE_FEATURES = 13


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--plan", help="HotPlan JSON for the hot/cold model")
    mode.add_argument("--profile", help="profile (.npz): plan in the job, HotShardingPlanner")
    mode.add_argument("--stock", action="store_true", help="stock TorchRec only")
    p.add_argument("--compare", action="store_true",
                   help="with --plan / --profile: also train stock")
    p.add_argument("--hbm-gb", type=float, default=0.002,
                   help="with --profile: HBM per rank for embedding rows, GiB")
    p.add_argument("--workload", default="criteo-kaggle")
    p.add_argument("--scale", type=float, default=0.01, help="table sizes (stock mode)")
    p.add_argument("--embedding-dim", type=int, default=16, help="(stock mode)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=256, help="samples per rank per step")
    p.add_argument("--alpha", type=float, default=1.05, help="Zipf exponent of the ids")
    p.add_argument("--lr", type=float, default=0.05, help="embeddings (row-wise Adagrad)")
    p.add_argument("--dense-optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--dense-lr", type=float, help="default: 0.001 for Adam, --lr for SGD")
    p.add_argument("--lr-schedule", choices=["warmup-cosine", "constant"],
                   default="warmup-cosine",
                   help="dense LR: linear warmup over the first 10%% of steps, then cosine to 0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank on CPU")
    p.add_argument("--weights-out", help="save the final logical state dict here (rank 0)")
    p.add_argument("--checkpoint-dir", help="sharded checkpoints here; resume from the latest")
    p.add_argument("--checkpoint-every", type=int, default=50, help="steps between checkpoints")
    p.add_argument("--keep", type=int, default=2,
                   help="complete checkpoints kept (the newest; 0 keeps all)")
    p.add_argument("--state-out", help="save each model's final optimizer states here (rank "
                   "0; PATH.stock, PATH.hot_cold): embedding (logical layout), dense, LR")
    p.add_argument("--replan-every", type=int, default=0,
                   help="every N steps, move the hot rows to the ids trained most in those steps")
    p.add_argument("--no-pipeline", action="store_true",
                   help="plain training loop instead of TorchRec's sparse-dist train pipeline")
    args = p.parse_args(argv)
    if args.compare and not (args.plan or args.profile):
        p.error("--compare needs --plan or --profile")
    return args


def init_distributed(backend: str) -> None:
    """`init_process_group` with the store keys of each torchrun restart kept apart: after a
    rank is killed and torchrun restarts the workers, the new group must not read addresses the
    old workers left in the store (seen with gloo: "connectFullMesh ... Connection refused")."""
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if restart is None:
        dist.init_process_group(backend)
        return
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=not agent_store and rank == 0,
                          timeout=timedelta(minutes=10), multi_tenant=not agent_store)
    dist.init_process_group(backend, store=dist.PrefixStore(f"dlrm/restart_{restart}", store),
                            rank=rank, world_size=world)


def make_batches(tables: list[EmbeddingBagConfig], args: argparse.Namespace, rank: int,
                 device: torch.device) -> list[Batch]:
    """This rank's batches: Zipf ids (one per feature), Gaussian dense features, 0/1 labels."""
    rng = np.random.default_rng([args.seed, rank])
    sparse = zipf_batches(tables, args.steps, args.batch_size, args.alpha,
                          seed=args.seed * 1000 + rank)
    return [
        Batch(
            dense_features=torch.from_numpy(
                rng.standard_normal((args.batch_size, DENSE_FEATURES)).astype(np.float32)),
            sparse_features=kjt,
            labels=torch.from_numpy(rng.integers(0, 2, args.batch_size).astype(np.float32)),
        ).to(device)
        for kjt in sparse
    ]


def build_model(tables: list[EmbeddingBagConfig], args: argparse.Namespace) -> nn.Module:
    """DLRMTrain on the meta device for the tables, dense layers seeded identically on every
    rank and in every mode; embeddings get row-wise Adagrad fused into the backward."""
    torch.manual_seed(args.seed)
    dim = tables[0].embedding_dim
    ebc = EmbeddingBagCollection(tables=tables, device=torch.device("meta"))
    dlrm = DLRM(embedding_bag_collection=ebc, dense_in_features=DENSE_FEATURES,
                dense_arch_layer_sizes=[64, dim], over_arch_layer_sizes=[64, 32, 1])
    apply_optimizer_in_backward(RowWiseAdagrad, ebc.parameters(), {"lr": args.lr})
    return DLRMTrain(dlrm)


def stock_plan(model: nn.Module, tables, world: int, device: torch.device,
               batch_size: int) -> ShardingPlan:
    """TorchRec's own plan; data-parallel is excluded (those tables get no fused optimizer)."""
    types = ["table_wise", "row_wise"] if device.type == "cuda" else ["table_wise"]
    constraints = {t.name: ParameterConstraints(sharding_types=types) for t in tables}
    planner = EmbeddingShardingPlanner(topology=make_topology(world, device.type),
                                       batch_size=batch_size, constraints=constraints)
    return planner.plan(model, [EmbeddingBagCollectionSharder()])


def initial_embeddings(tables: list[EmbeddingBagConfig], seed: int) -> dict[str, torch.Tensor]:
    """Logical embedding weights, the same on every rank and in every mode."""
    gen = torch.Generator().manual_seed(seed + 7)
    return {f"{MODULE_PATH}.embedding_bags.{t.name}.weight":
            (torch.rand(t.num_embeddings, t.embedding_dim, generator=gen) - 0.5) * 0.1
            for t in tables}


def dense_optimizer(dmp: nn.Module, args: argparse.Namespace
                    ) -> tuple[KeyedOptimizerWrapper, LRScheduler]:
    """The dense layers' optimizer (TorchRec's KeyedOptimizerWrapper: state keyed by parameter
    name) and its LR schedule, stepped once per training step."""
    params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    if args.dense_optimizer == "adam":
        lr = 0.001 if args.dense_lr is None else args.dense_lr
        dense = KeyedOptimizerWrapper(params, lambda ps: torch.optim.Adam(ps, lr=lr))
    else:
        lr = args.lr if args.dense_lr is None else args.dense_lr
        dense = KeyedOptimizerWrapper(params, lambda ps: torch.optim.SGD(ps, lr=lr))
    if args.lr_schedule == "constant":
        return dense, ConstantLR(dense, factor=1.0, total_iters=0)
    warmup = max(1, args.steps // 10)
    return dense, SequentialLR(dense, [LinearLR(dense, start_factor=0.1, total_iters=warmup),
                                       CosineAnnealingLR(dense, max(1, args.steps - warmup))],
                               milestones=[warmup])


def resume(label: str, dmp: nn.Module, ckpt: Path, dense: KeyedOptimizerWrapper,
           schedule: LRScheduler) -> int:
    """Loads the latest checkpoint into the model, the dense optimizer, the LR schedule and
    this rank's RNGs; returns the number of batches already trained on."""
    progress = load_checkpoint(dmp, ckpt, optimizers={"dense": dense},
                               lr_schedulers={"dense": schedule})
    world = dist.get_world_size()
    if dist.get_rank() == 0:
        print(f"[{label}] resumed from {latest_checkpoint(ckpt)} at step {progress.step}",
              file=sys.stderr, flush=True)
        if progress.saved_world_size not in (world, -1):
            print(f"[{label}] note: saved by {progress.saved_world_size} ranks, resumed on "
                  f"{world}: weights and optimizer states are restored exactly, but each rank "
                  "now reads its own batches from step "
                  f"{progress.data_position} (other data than the {progress.saved_world_size}"
                  "-rank run), ranks the checkpoint has no RNG state for keep their seeds, "
                  "and gradients are averaged over a global batch of "
                  f"{world} x --batch-size samples (TorchRec's GRADIENT_DIVISION, as DDP): "
                  "keep ranks x --batch-size fixed to keep the step's scale",
                  file=sys.stderr, flush=True)
    return progress.data_position


def train(label: str, model: nn.Module, plan: ShardingPlan, batches: list[Batch],
          init: dict[str, torch.Tensor], args: argparse.Namespace,
          device: torch.device,
          hot_plan: HotPlan | None = None) -> tuple[float, dict[str, torch.Tensor], float]:
    """Trains one model; returns (samples/s over all ranks, final logical state, last loss).
    With --checkpoint-dir it resumes from the latest checkpoint (same batches, same order) and
    saves one every --checkpoint-every steps."""
    dmp = DistributedModelParallel(model, plan=plan, device=device)
    dense, schedule = dense_optimizer(dmp, args)
    ckpt = Path(args.checkpoint_dir) / label if args.checkpoint_dir else None
    first = 0
    if ckpt is not None and latest_checkpoint(ckpt) is not None:
        first = resume(label, dmp, ckpt, dense, schedule)
    else:
        state = logical_state_dict(dmp)
        state.update(init)
        load_logical_state_dict(dmp, state)
    optimizer = CombinedOptimizer([dmp.fused_optimizer, dense])
    rank, world = dist.get_rank(), dist.get_world_size()
    counter = None
    if hot_plan is not None and args.replan_every:
        (module,) = hot_cold_modules(dmp).values()
        counter = OnlineCounter.for_module(module, device)
    warmup = first + min(10, (len(batches) - first) // 4)
    pipeline = None if args.no_pipeline else make_train_pipeline(dmp, optimizer, device, plan)
    data = iter(batches[first:])
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(first, len(batches)), desc=label, disable=rank != 0, file=sys.stderr)
    for step in bar:
        if step == warmup:
            dist.barrier()
            start = time.perf_counter()
        if pipeline is not None:  # zero_grad, forward, backward, step; next batch in flight
            loss = pipeline.progress(data)[0]
        else:
            loss, _ = dmp(batches[step])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        schedule.step()
        if counter is not None:
            counter.update(batches[step].sparse_features)
        losses.append(float(loss.detach()))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if counter is not None and (step + 1) % args.replan_every == 0:
            hot_plan = rehot_plan(hot_plan, counter.reduce())  # type: ignore[arg-type]
            counter.reset()
            # in flight: the next batch, remapped with the old hot ids; fed again after replan
            if pipeline is not None:
                pipeline, data, report = replan_pipelined(
                    pipeline, dmp, optimizer, device, hot_plan, data, plan)
            else:
                report = replan(dmp, hot_plan)
            if rank == 0:
                bar.write(f"[{label}] step {step + 1}: re-planned, "
                          f"{sum(report.rows_moved.values()):,} rows changed hotness in "
                          f"{report.tables_moved} tables, {report.seconds * 1e3:.0f} ms",
                          file=sys.stderr)
        if ckpt is not None and (step + 1) % args.checkpoint_every == 0:
            save_checkpoint(dmp, ckpt, step=step + 1, keep=args.keep,
                            optimizers={"dense": dense}, lr_schedulers={"dense": schedule},
                            data_position=step + 1)
    if pipeline is not None:
        drain_pipeline(pipeline)
    dist.barrier()
    if args.state_out:
        fused = logical_optimizer_state(dmp)  # collective
        if rank == 0:
            torch.save({"embedding": fused, "dense": dense.state_dict(),
                        "lr": schedule.get_last_lr()}, f"{args.state_out}.{label}")
    seconds = time.perf_counter() - start
    samples_per_s = (len(batches) - warmup) * args.batch_size * world / max(seconds, 1e-9)
    return samples_per_s, logical_state_dict(dmp), float(np.mean(losses[-20:]))


@no_restart_on()  # a bad batch, plan or profile ends a torchrun job instead of restarting it
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("torchrec").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(args.threads)
    init_distributed("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()

    hot_plan = HotPlan.from_json(args.plan) if args.plan else None
    profile = load_profile(args.profile) if args.profile else None
    if hot_plan is not None:
        if hot_plan.world_size != world:
            raise SystemExit(f"the plan is for {hot_plan.world_size} ranks, torchrun gave {world}")
        tables = hot_plan.logical_configs()
    elif profile is not None:  # the profiled tables, as the model holds them
        tables = [EmbeddingBagConfig(name=t.name, num_embeddings=t.num_embeddings,
                                     embedding_dim=t.embedding_dim,
                                     feature_names=list(t.feature_names))
                  for t in profile.tables]
    else:
        tables = criteo_tables(args.workload, args.scale, args.embedding_dim)
    batches = make_batches(tables, args, rank, device)
    init = initial_embeddings(tables, args.seed)

    results: dict[str, tuple[float, dict[str, torch.Tensor], float]] = {}
    if args.stock or args.compare:
        model = build_model(tables, args)
        plan = stock_plan(model, tables, world, device, args.batch_size)
        results["stock TorchRec"] = train("stock", model, plan, batches, init, args, device)
    if hot_plan is not None or profile is not None:
        model = build_model(tables, args)
        sharding_plan = hot_plan.sharding_plan if hot_plan is not None else None
        if profile is not None:  # TorchRec's way: a ShardingPlanner, collective_plan, DMP
            planner = HotShardingPlanner(make_topology(world, device.type), profile,
                                         hbm_budget_bytes=int(args.hbm_gb * 2**30),
                                         batch_size=args.batch_size, compare_with_stock=False)
            sharding_plan = planner.collective_plan(model)
            hot_plan = planner.hot_plan
        if rank == 0:
            print(format_report(build_report(hot_plan)), flush=True)
        if device.type == "cpu" and hot_plan.compute_device != "cpu":
            sharding_plan = retarget_sharding_plan(sharding_plan, "cpu")
        model = apply_hot_plan(model, hot_plan)
        results["torchrec-hot"] = train("hot_cold", model, sharding_plan, batches, init, args,
                                        device, hot_plan)
    if rank == 0:
        loop = "plain loop" if args.no_pipeline else "TorchRec sparse-dist train pipeline"
        if not args.no_pipeline and hot_plan is not None:  # which one the hot/cold model used
            prefetch = cuda and uses_cache_prefetch(hot_plan.sharding_plan)
            loop += (" (torchrec-hot: PrefetchTrainPipelineSparseDist, UVM caches filled a "
                     "batch ahead)" if prefetch else " (TrainPipelineSparseDist)")
        print(f"\n{world} ranks x {args.batch_size} samples/step, {args.steps} steps, "
              f"{'cuda' if cuda else f'cpu, {args.threads} thread(s) per rank'}, {loop}")
        for name, (rate, _, loss) in results.items():
            print(f"  {name:>15}: {rate:10,.0f} samples/s   final loss {loss:.5f}")
        if len(results) == 2:
            (s_rate, s_state, _), (h_rate, h_state, _) = results.values()
            diff = max(float((s_state[k] - h_state[k]).abs().max()) for k in s_state)
            print(f"  torchrec-hot / stock throughput: {h_rate / s_rate:.2f}x")
            print(f"  max abs difference of the final logical weights: {diff:.3g}")
        if args.weights_out:
            _, state, _ = list(results.values())[-1]
            Path(args.weights_out).parent.mkdir(parents=True, exist_ok=True)
            torch.save(state, args.weights_out)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
