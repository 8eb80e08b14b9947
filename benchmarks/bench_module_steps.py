"""Timed steps of `bench_module.py`: builds the stock and hot/cold models and times them.

Per case (share, per-rank batch B) both models run forward + backward on the same batches,
alternating step by step after warm-up; forward hooks (`StageTimer`) add up the time of each
stage of the hot/cold step without changing the module. `run_cases` runs all cases in one
process (unsharded, or one rank of DMP); `run_dmp` spawns the ranks of a 2-rank DMP run.
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
from bench_module_workload import Data, hot_share, tune_malloc
from torch import nn
from torchrec import EmbeddingBagCollection, KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.types import LazyAwaitable
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from tqdm import tqdm

from tests.dist_utils import run_on_ranks
from torchrec_hot import HotColdEmbeddingBagCollection, make_topology
from torchrec_hot.data.synthetic import criteo_tables
from torchrec_hot.planner.colocate import colocate_split_tables
from torchrec_hot.sharding.presum import PresummedOutputDist
from torchrec_hot.tables.split import Placement


class StageTimer:
    """Forward hooks that add up wall time (s) per stage of the current step."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync, self.acc, self._start = sync, {}, {}

    def watch(self, module: nn.Module, stage: str) -> None:
        def pre(m, args) -> None:
            self.sync()
            self._start[id(m)] = time.perf_counter()

        def post(m, args, out):
            LazyAwaitable._wait_async(out)  # sharded modules return lazily waited outputs
            self.sync()
            self.acc[stage] = self.acc.get(stage, 0.0) + time.perf_counter() - self._start[id(m)]

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def watch_backward(self, module: nn.Module, stage: str) -> None:
        """Times `module`'s backward (KeyedTensor or tensor in and out): from the moment its
        output's gradient exists to the moment its input's does (tensor hooks)."""

        def start(grad: torch.Tensor) -> None:
            self.sync()
            self._start[stage] = time.perf_counter()

        def stop(grad: torch.Tensor) -> None:
            self.sync()
            self.acc[stage] = self.acc.get(stage, 0.0) + time.perf_counter() - self._start[stage]

        def post(m, args, out) -> None:
            out, inp = (x if isinstance(x, torch.Tensor) else x.values() for x in (out, args[0]))
            if out.requires_grad and inp.requires_grad:
                out.register_hook(start)
                inp.register_hook(stop)

        module.register_forward_hook(post)


class _Wrapper(nn.Module):
    def __init__(self, ebc: nn.Module) -> None:
        super().__init__()
        self.ebc = ebc

    def forward(self, kjt: KeyedJaggedTensor) -> torch.Tensor:
        return self.ebc(kjt).values()


def _timers(model: nn.Module, hot_cold: bool, sync: Callable[[], None]) -> StageTimer:
    timer = StageTimer(sync)
    ebc = model.ebc
    timer.watch(ebc, "forward")
    if not hot_cold and type(ebc) is EmbeddingBagCollection:  # unsharded stock: its tables
        for bag in ebc.embedding_bags.values():
            timer.watch(bag, "inner")
    if hot_cold:
        timer.watch(ebc.remap, "remap")
        inner = ebc.split_module
        if type(inner) is EmbeddingBagCollection:  # unsharded: the module calls each table
            for bag in inner.embedding_bags.values():
                timer.watch(bag, "inner")
        else:
            timer.watch(inner, "inner")
            timer.watch_backward(ebc.merge, "merge_bwd")  # sharded: `MergeRows` backward
            ebc.presum_sharded()  # co-located halves: summed inside the output dists
            for d in inner._output_dists:
                if isinstance(d, PresummedOutputDist) and d.column_sum is not None:
                    timer.watch(d.column_sum, "presum")
                    timer.watch_backward(d.column_sum, "presum_bwd")
    return timer


def _sharded(
    model: nn.Module, names: list[str], kinds: dict[str, str], device, colocate: list[str]
) -> nn.Module:
    """DMP of `model` with every table table-wise (compute kernel from `kinds`, else fused)
    as TorchRec's planner places them; the halves of the split tables `colocate` then on one
    rank, as `HotPlanner` does."""
    apply_optimizer_in_backward(torch.optim.SGD, model.parameters(), {"lr": 0.01})
    constraints = {
        n: ParameterConstraints(
            sharding_types=["table_wise"], compute_kernels=[kinds.get(n, "fused")]
        )
        for n in names
    }
    planner = EmbeddingShardingPlanner(
        topology=make_topology(dist.get_world_size(), device.type),
        batch_size=4096,
        constraints=constraints,
    )
    plan = planner.plan(model, [EmbeddingBagCollectionSharder()])
    if colocate:
        plan, _ = colocate_split_tables(plan, dict.fromkeys(colocate, 0))  # no host check
    return DistributedModelParallel(model, plan=plan, device=device)


def build(cfg, tables, hot: dict | None, device: torch.device, sharded: bool) -> nn.Module:
    """Stock (`hot` None) or hot/cold model; sharded: DMP over the current process group."""
    where = torch.device("meta") if sharded else device
    if hot is None:
        ebc: nn.Module = EmbeddingBagCollection(tables, device=where)
        names, kinds, split = [t.name for t in tables], {}, []
    else:
        ebc = HotColdEmbeddingBagCollection(tables, hot, device=where, presum=cfg.colocate)
        names = [p for t in tables for p in ebc.split_table_names(t.name)]
        cold = "fused_uvm" if device.type == "cuda" else "fused"
        kinds = {p: cold for p in names if p.endswith("__cold")}
        placements = ebc.placements()
        split = [t.name for t in tables if placements[t.name] is Placement.SPLIT]
    model = _Wrapper(ebc)
    colocate = split if cfg.colocate else []
    return _sharded(model, names, kinds, device, colocate) if sharded else model


def time_case(cfg, stock, hot_cold, batches, device, sharded: bool) -> dict:
    """Alternating steps of both models; returns per-step stage seconds for each."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    models = {"stock": stock, "hc": hot_cold}
    timers = {k: _timers(m.module if sharded else m, k == "hc", sync) for k, m in models.items()}
    remapper = (hot_cold.module if sharded else hot_cold).ebc.remap
    steps: dict = {k: [] for k in models}
    for i in range(cfg.warmup + cfg.repeats):
        kjt = batches[i % len(batches)]
        for name, model in models.items():
            timer = timers[name]
            timer.acc = {}
            if sharded:
                dist.barrier()
            sync()
            start, cpu = time.perf_counter(), time.process_time()
            model(kjt).sum().backward()
            sync()
            step, cpu = time.perf_counter() - start, time.process_time() - cpu
            if not sharded:
                for p in model.parameters():
                    p.grad = None
            if name == "hc":
                sync()
                t0 = time.perf_counter()
                remapper.validate(kjt)
                sync()
                timer.acc["validate"] = time.perf_counter() - t0
            if i >= cfg.warmup:
                steps[name].append({**timer.acc, "step": step, "cpu": cpu})
    return steps


def run_cases(cfg, device: torch.device, sharded: bool, rank: int, label: str) -> list[dict]:
    """All (share, batch) cases in this process (one rank when `sharded`)."""
    torch.set_num_threads(cfg.threads)
    tables = criteo_tables("criteo-kaggle", cfg.scale, cfg.dim)
    data = Data(tables, cfg.alpha, cfg.seed)
    batches = {
        b: [data.batch(b, (cfg.seed, 2, rank, b, j)).to(device) for j in range(cfg.batches)]
        for b in cfg.batch_sizes
    }
    stock = build(cfg, tables, None, device, sharded)
    results = []
    total = len(cfg.shares) * len(cfg.batch_sizes)
    bar = tqdm(total=total, desc=label, disable=rank != 0, file=sys.stderr)
    for share in cfg.shares:
        hot = data.hot_ids(share, cfg.profile_samples, cfg.seed)
        hot_cold = build(cfg, tables, hot, device, sharded)
        if not sharded:
            hot_cold.load_state_dict(stock.state_dict())
        for b in cfg.batch_sizes:
            measured = hot_share([k.to("cpu") for k in batches[b]], hot, tables)
            steps = time_case(cfg, stock, hot_cold, batches[b], device, sharded)
            results.append(dict(share=share, batch=b, measured_share=measured, steps=steps))
            bar.update()
        del hot_cold
    bar.close()
    return results


def _rank_cases(rank: int, world: int, cfg, backend: str) -> list[dict]:
    """One rank of `run_dmp` (in `tests.dist_utils.run_on_ranks`' process group)."""
    if cfg.malloc == "tuned":
        tune_malloc()
    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    return run_cases(cfg, device, True, rank, f"dmp {backend}")


def run_dmp(cfg, backend: str, world: int = 2, colocate: bool = True) -> list[dict]:
    """All cases under `world`-rank DMP; `colocate`: each split table's halves on one rank."""
    cfg = copy.copy(cfg)
    cfg.colocate = colocate  # False: also no sum on the rank where TorchRec pairs them by chance
    per_rank = run_on_ranks(_rank_cases, world, cfg, backend, backend=backend)
    return [  # per case: the ranks' step lists, their mean measured share
        {
            **cs[0],
            "measured_share": statistics.mean(c["measured_share"] for c in cs),
            "steps": [c["steps"] for c in cs],
        }
        for cs in zip(*per_rank, strict=True)
    ]
