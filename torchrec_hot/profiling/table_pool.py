"""`TablePool`: a chunk's per-table (or per-feature) jobs on a few threads.

Counting and range checks are torch/numpy kernels that release the GIL, so one chunk's tables
are handled in parallel; jobs are given largest first so the threads finish together. Small
chunks stay on the calling thread (handing them over costs more than it saves).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
PARALLEL_MIN_IDS = 1 << 18  # below this many ids in all a chunk's jobs run on the calling thread


class TablePool:
    """Runs jobs on `threads` threads (default min(2, CPUs)); the executor starts on first use."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or min(2, os.cpu_count() or 1)
        self._executor: ThreadPoolExecutor | None = None

    def run(self, jobs: Mapping[str, Callable[[], None]], sizes: Mapping[str, int]) -> None:
        """Runs `jobs` (key -> callable, in the order given) and waits for all of them, then
        raises the first job's error in that order (so an error does not depend on which
        thread was faster). `sizes`: ids per job; together under `PARALLEL_MIN_IDS`, or one
        job, or one thread: all run here, in order."""
        if self.threads <= 1 or sum(sizes.values()) < PARALLEL_MIN_IDS or len(jobs) < 2:
            for job in jobs.values():
                job()
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="torchrec-hot")
        futures = [self._executor.submit(job) for job in jobs.values()]
        for error in [f.exception() for f in futures]:
            if error is not None:
                raise error

    def map(self, fn: Callable[[T], R], items: Sequence[T], sizes: Sequence[int]) -> list[R]:
        """`[fn(item) for item in items]`, computed by `run` largest `sizes` first (the
        threads finish together); errors as `run` raises them."""
        results: list[R] = [None] * len(items)  # type: ignore[list-item]

        def one(i: int) -> None:
            results[i] = fn(items[i])

        order = sorted(range(len(items)), key=lambda i: -sizes[i])
        self.run({str(i): partial(one, i) for i in order}, {str(i): sizes[i] for i in order})
        return results

    def close(self) -> None:
        """Stops the threads (a later `run` starts them again)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None

    def __enter__(self) -> TablePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
