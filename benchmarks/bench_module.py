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
`apply_optimizer_in_backward`), `cuda` (same code on GPUs: unsharded, and 2-rank nccl DMP with
hot tables `fused` in HBM, cold `fused_uvm`; skipped without CUDA). `--malloc tuned` raises
glibc's mmap / trim thresholds in every process (see docs/BENCHMARKS.md); `both` runs each.

Breakdown of the hot/cold step, by forward hooks (the module is not changed): validation
(`remap.validate` timed alone on the same batch), remap (the remap call minus validation), inner
split-EBC (its forward; unsharded, the sum of its tables' calls), merge (rest of the forward:
hot + cold, concatenation), backward (step minus forward).
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor
from torchrec.distributed import DistributedModelParallel
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints
from torchrec.distributed.types import LazyAwaitable
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from torchrec_hot import HotColdEmbeddingBagCollection, make_topology  # noqa: E402
from torchrec_hot.data.synthetic import criteo_tables, zipf_ranks  # noqa: E402

STAGES = ("validate", "remap", "inner", "merge", "backward")
SECTION = "## Module overhead (bench_module.py)"
RATIO_CELL = "wall-time ratio / CPU-time ratio (hot/cold ms / stock ms, wall, median)"


def tune_malloc() -> None:
    """glibc: serve large buffers from the heap and keep freed memory (no page faults per
    fresh buffer): M_MMAP_THRESHOLD = 1 GiB, M_TRIM_THRESHOLD = 2 GiB."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 30)
    libc.mallopt(-1, (1 << 31) - 1)


class Data:
    """Zipf ids with a fixed rank -> id permutation per table (id = (a r + b) mod N)."""

    def __init__(self, tables: list[EmbeddingBagConfig], alpha: float, seed: int) -> None:
        self.tables, self.alpha = tables, alpha
        rng = np.random.default_rng(seed)
        self.perm = []
        for t in tables:
            n = t.num_embeddings
            a = int(rng.integers(1, max(2, n)))
            while math.gcd(a, n) != 1:
                a += 1
            self.perm.append((a, int(rng.integers(0, n))))

    def ids(self, i: int, size: int, rng: np.random.Generator) -> np.ndarray:
        n, (a, b) = self.tables[i].num_embeddings, self.perm[i]
        return (zipf_ranks(n, self.alpha, size, rng) * a + b) % n

    def batch(self, size: int, seed: tuple[int, ...]) -> KeyedJaggedTensor:
        """One KJT of `size` samples, one id per feature and sample."""
        rng = np.random.default_rng(list(seed))
        values = np.concatenate([self.ids(i, size, rng) for i in range(len(self.tables))])
        return KeyedJaggedTensor.from_lengths_sync(
            keys=[t.feature_names[0] for t in self.tables],
            values=torch.from_numpy(values),
            lengths=torch.ones(size * len(self.tables), dtype=torch.int32),
        )

    def hot_ids(self, share: float, samples: int, seed: int) -> dict[str, torch.Tensor]:
        """Per table: its most frequent ids in a profile of `samples` lookups, as few as
        serve `share` of them (sorted int64)."""
        rng = np.random.default_rng([seed, 1])
        out = {}
        for i, t in enumerate(self.tables):
            counts = np.bincount(self.ids(i, samples, rng), minlength=t.num_embeddings)
            order = np.argsort(-counts, kind="stable")
            need = int(np.searchsorted(np.cumsum(counts[order]), share * samples - 1e-9)) + 1
            out[t.name] = torch.from_numpy(np.sort(order[:need]))
        return out


def hot_share(kjts: list[KeyedJaggedTensor], hot: dict[str, torch.Tensor], tables) -> float:
    """Share of the lookups of `kjts` that hit hot ids."""
    hits = total = 0
    for kjt in kjts:
        for t in tables:
            v = kjt[t.feature_names[0]].values()
            hits += int(torch.isin(v, hot[t.name]).sum())
            total += v.numel()
    return hits / max(total, 1)


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
    if hot_cold:
        timer.watch(ebc.remap, "remap")
        inner = ebc.split_module
        if type(inner) is EmbeddingBagCollection:  # unsharded: the module calls each table
            for bag in inner.embedding_bags.values():
                timer.watch(bag, "inner")
        else:
            timer.watch(inner, "inner")
    return timer


def _sharded(model: nn.Module, names: list[str], kinds: dict[str, str], device) -> nn.Module:
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
    return DistributedModelParallel(model, plan=plan, device=device)


def build(cfg, tables, hot: dict | None, device: torch.device, sharded: bool) -> nn.Module:
    """Stock (`hot` None) or hot/cold model; sharded: DMP over the current process group."""
    where = torch.device("meta") if sharded else device
    if hot is None:
        ebc: nn.Module = EmbeddingBagCollection(tables, device=where)
        names, kinds = [t.name for t in tables], {}
    else:
        ebc = HotColdEmbeddingBagCollection(tables, hot, device=where)
        names = [p for t in tables for p in ebc.split_table_names(t.name)]
        cold = "fused_uvm" if device.type == "cuda" else "fused"
        kinds = {p: cold for p in names if p.endswith("__cold")}
    model = _Wrapper(ebc)
    return _sharded(model, names, kinds, device) if sharded else model


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


def summarize(steps_per_rank: list[dict]) -> dict:
    """Median over steps of each stage (ms); per step the slowest rank's values."""
    out = {}
    for name in ("stock", "hc"):
        per_step = zip(*(r[name] for r in steps_per_rank), strict=True)
        rows = [max(ranks, key=lambda s: s["step"]) for ranks in per_step]
        med = {k: 1e3 * statistics.median(r.get(k, 0.0) for r in rows) for k in rows[0]}
        med["backward"] = 1e3 * statistics.median(r["step"] - r["forward"] for r in rows)
        if name == "hc":
            med["remap"] = 1e3 * statistics.median(r["remap"] - r["validate"] for r in rows)
            med["merge"] = 1e3 * statistics.median(
                r["forward"] - r["remap"] - r.get("inner", 0.0) for r in rows
            )
        out[name] = med
    return out


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(rank: int, world: int, port: int, out: str, cfg, backend: str) -> None:
    if cfg.malloc == "tuned":
        tune_malloc()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        cases = run_cases(cfg, device, True, rank, f"dmp {backend}")
        torch.save(cases, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_dmp(cfg, backend: str, world: int = 2) -> list[dict]:
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_rank_main, args=(world, _free_port(), out, cfg, backend), nprocs=world)
        per_rank = [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]
    return [  # per case: the ranks' step lists, their mean measured share
        {
            **cs[0],
            "measured_share": statistics.mean(c["measured_share"] for c in cs),
            "steps": [c["steps"] for c in cs],
        }
        for cs in zip(*per_rank, strict=True)
    ]


def finish(cases: list[dict], mode: str) -> list[dict]:
    for c in cases:
        steps = c.pop("steps")
        c.update(mode=mode, **summarize(steps if isinstance(steps, list) else [steps]))
        c["ratio"] = c["hc"]["step"] / c["stock"]["step"]
        c["cpu_ratio"] = c["hc"]["cpu"] / c["stock"]["cpu"]
        ours = c["hc"]["validate"] + c["hc"]["remap"] + c["hc"]["merge"]
        c["ours_pct"] = 100 * ours / c["stock"]["step"]
    return cases


def ratio_table(cases: list[dict], batch_sizes: list[int]) -> str:
    lines = ["| mode | hot share (measured) | " + " | ".join(f"B={b}" for b in batch_sizes) + " |"]
    lines.append("|" + "---|" * (2 + len(batch_sizes)))
    for mode, share in sorted({(c["mode"], c["share"]) for c in cases}):
        row = {c["batch"]: c for c in cases if c["mode"] == mode and c["share"] == share}
        measured = statistics.mean(c["measured_share"] for c in row.values())
        cells = [
            f"**{c['ratio']:.2f}x** / {c['cpu_ratio']:.2f}x "
            f"({c['hc']['step']:.1f} / {c['stock']['step']:.1f})"
            if (c := row.get(b))
            else "-"
            for b in batch_sizes
        ]
        lines.append(f"| {mode} | {share:.0%} ({measured:.1%}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def breakdown_table(cases: list[dict]) -> str:
    cols = "stock fwd | stock bwd | validate | remap | inner split-EBC | merge | hot/cold bwd"
    lines = [f"| mode | share | B | {cols} | ours / stock step |", "|" + "---|" * 11]
    for c in cases:
        s, h = c["stock"], c["hc"]
        vals = [s["forward"], s["backward"]] + [h[k] for k in STAGES[:3] + ("merge", "backward")]
        cells = " | ".join(f"{v:.1f}" for v in vals)
        lines.append(
            f"| {c['mode']} | {c['share']:.0%} | {c['batch']} | {cells} | {c['ours_pct']:.1f}% |"
        )
    return "\n".join(lines)


def plot(cases: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes, batches = sorted({c["mode"] for c in cases}), sorted({c["batch"] for c in cases})
    cols = min(2, len(modes))
    rows = -(-len(modes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
    for ax, mode in zip(axes.flat, modes, strict=False):
        for share in sorted({c["share"] for c in cases}):
            pts = sorted(
                (c["batch"], c["ratio"]) for c in cases if (c["mode"], c["share"]) == (mode, share)
            )
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{share:.0%} hot")
        ax.axhline(1.15, color="grey", linestyle="--", linewidth=1, label="1.15x bar")
        ax.set(xscale="log", xlabel="per-rank batch size", ylabel="hot/cold / stock step")
        ax.set(title=mode, ylim=(0, None))
        ax.minorticks_off()
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.legend(fontsize=7, ncol=2)
    for ax in list(axes.flat)[len(modes) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "?")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}, torch {torch.__version__}"


def write_doc(path: Path, report: str) -> None:
    """Replace (or append) this benchmark's section of `path`, up to the next `## ` heading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in text:
        start = text.index(SECTION)
        end = text.find("\n## ", start + len(SECTION))
        text = text[:start] + report + (text[end:] if end >= 0 else "\n")
    else:
        text = text.rstrip("\n") + "\n\n" + report + "\n"
    path.write_text(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=0.02, help="rows x scale (Criteo Kaggle)")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--alpha", type=float, default=1.1, help="Zipf exponent")
    p.add_argument("--shares", default="0.5,0.8,0.95,0.99", help="hot lookup shares")
    p.add_argument("--batch-sizes", default="512,1024,2048,4096", help="per rank")
    p.add_argument("--modes", default="unsharded,dmp,cuda", help="of unsharded,dmp,cuda")
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
    return args


def run_all(cfg, malloc: str) -> list[dict]:
    cfg.malloc, suffix = malloc, "" if malloc == "default" else f" ({malloc} malloc)"
    cases: list[dict] = []
    if "unsharded" in cfg.modes:
        cases += finish(run_cases(cfg, torch.device("cpu"), False, 0, "unsharded"), "unsharded")
    if "dmp" in cfg.modes:
        cases += finish(run_dmp(cfg, "gloo"), "dmp gloo")
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
    write_doc(
        cfg.doc,
        f"""{SECTION}

Command: `{command}` ({minutes:.1f} min). Date: {datetime.date.today().isoformat()}.
Machine: {machine()}. torch threads per process: {cfg.threads}.
Load average at start / end: {load:.1f} / {os.getloadavg()[0]:.1f}.

Workload: Criteo Kaggle's 26 tables x {cfg.scale} rows ({rows:,} rows), dim {cfg.dim}, Zipf
alpha {cfg.alpha}, one id per feature and sample; {cfg.warmup} warm-up + {cfg.repeats} timed
steps per model and case, alternating stock and hot/cold, median.

Forward + backward step time, hot/cold / stock: {RATIO_CELL}.

{ratios}

![ratio vs batch size]({cfg.png.name})

Breakdown (ms, median over steps; ours = validate + remap + merge):

{breakdown}
""",
    )
    plot(cases, cfg.png)
    print(f"wrote {cfg.doc} and {cfg.png}")


if __name__ == "__main__":
    main()
