"""Run a function on N gloo ranks (spawned processes) and collect what each rank returns."""

from __future__ import annotations

import datetime
import multiprocessing
import os
import socket
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int, world: int, port: int, out: str, fn: Callable, args: tuple, backend: str,
    timeout_s: float | None = None,
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    timeout = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=timeout_s)}
    dist.init_process_group(backend, rank=rank, world_size=world, **timeout)
    try:
        result = fn(rank, world, *args)
        torch.save(result, Path(out) / f"rank{rank}.pt")
        dist.barrier()  # every rank's result is on disk
    finally:
        dist.destroy_process_group()
    # Skip interpreter teardown: about 1 run in 10 of a DMP + DCP worker aborted there
    # ("terminate called without an active exception", SIGABRT, both ranks) after its result
    # was written, also before torchrec-hot's last changes. A failure inside `fn` still raises.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_on_ranks(
    fn: Callable[..., Any], world: int, *args: Any, backend: str = "gloo",
    timeout_s: float | None = None,
) -> list[Any]:
    """`fn(rank, world, *args)` on `world` processes with a `backend` group (nccl: rank r on
    cuda:r; collectives time out after `timeout_s`, default torch's); returns their results."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_worker, args=(world, _free_port(), out, fn, args, backend, timeout_s),
                 nprocs=world,
                 join=True)  # fmt: skip
        return [torch.load(Path(out) / f"rank{r}.pt", weights_only=False) for r in range(world)]


def _forked_rank(fn: Callable, rank: int, world: int, port: int, out: Path, timeout_s: float,
                 *args: Any) -> None:
    """One forked rank of a gloo job: saves `fn(rank, world, *args)` to `out` and exits
    without teardown (the group may be broken: a test killed a rank)."""
    code = 1
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s))
        torch.save(fn(rank, world, *args), out)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fork_jobs(
    jobs: list[tuple[Callable, tuple]], out: Path, world: int = 2, timeout_s: float = 60,
) -> list[tuple[int, int | None, Any]]:
    """Runs each `(fn, args)` as a `world`-rank gloo job (`fn(rank, world, *args)`), all jobs
    at once, in processes forked from this one (no re-import of torch: seconds instead of a
    spawn's tens on a loaded machine); collectives time out after `timeout_s`. Returns, per job
    and rank in order, (job index, exit code, the rank's result or None when it did not exit
    normally). Fails when a rank is still running after 3 x `timeout_s`."""
    ctx = multiprocessing.get_context("fork")
    procs = []
    for j, (fn, args) in enumerate(jobs):
        port = _free_port()
        procs += [(j, r, ctx.Process(target=_forked_rank,
                                     args=(fn, r, world, port, out / f"{j}_{r}.pt", timeout_s,
                                           *args)))
                  for r in range(world)]
    for _, _, p in procs:
        p.start()
    for _, _, p in procs:
        p.join(timeout=3 * timeout_s)
    hung = [(j, r) for j, r, p in procs if p.is_alive()]
    for _, _, p in procs:
        p.kill()
    assert not hung, f"ranks still running: {hung}"
    return [(j, p.exitcode,
             torch.load(out / f"{j}_{r}.pt", weights_only=False) if p.exitcode == 0 else None)
            for j, r, p in procs]
