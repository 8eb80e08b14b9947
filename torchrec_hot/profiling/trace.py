"""`IdTrace`: a bounded, uniform sample of runs of consecutive batches, with all their ids.

Counts say how popular each row is; a trace says *when* rows are looked up, which is what cache
simulations (LRU miss-rate curves, look-forward working sets) need. Recording every id is out of
the question at scale, so the profile keeps runs of `run_batches` consecutive batches, chosen
uniformly among all runs of the input by bottom-k sampling: each run draws a seeded key
u ~ U(0, 1) and the runs with the smallest keys are kept while their ids fit `max_ids` (all
tables together). A run whose key cannot make it is skipped without copying its ids, so
recording costs O(kept ids). Traces merge (ranks, jobs) by the same rule over the union of runs.

The trace is taken from the input before per-sample sampling (a sampled profile still has whole
batches in its trace). Ids are kept as int64, in batch order; within a batch, feature by feature
in the input's order (as a KJT lays them out).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from torchrec_hot.data.chunk import IdChunk


@dataclass
class TraceRun:
    """Consecutive batches of one window.

    Attributes:
        key: bottom-k sampling key in (0, 1).
        window: name of the window the batches belong to.
        start_sample: index of the run's first sample within its window (this rank's input).
        batch_samples: samples per batch, int64 (num_batches,).
        ids: table -> all ids of the run's batches, int64, batch after batch.
        offsets: table -> int64 (num_batches + 1,) offsets of each batch in `ids[table]`.
    """

    key: float
    window: str
    start_sample: int
    batch_samples: list[int] = field(default_factory=list)
    ids: dict[str, list[np.ndarray] | np.ndarray] = field(default_factory=dict)
    offsets: dict[str, list[int] | np.ndarray] = field(default_factory=dict)

    @property
    def num_batches(self) -> int:
        return len(self.batch_samples)

    @property
    def num_ids(self) -> int:
        return sum(int(np.asarray(self.offsets[t])[-1]) for t in self.offsets)

    def batches(self, table: str) -> list[np.ndarray]:
        """The ids of `table` in each batch of the run (views, int64)."""
        ids, offsets = np.asarray(self.ids[table]), np.asarray(self.offsets[table])
        return [ids[offsets[b] : offsets[b + 1]] for b in range(self.num_batches)]

    def _close(self) -> None:
        for table, parts in self.ids.items():
            if isinstance(parts, list):
                self.ids[table] = (
                    np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
                ).astype(np.int64, copy=False)
        for table, offs in self.offsets.items():
            self.offsets[table] = np.asarray(offs, dtype=np.int64)


class IdTrace:
    """A bounded sample of runs of consecutive batches (see the module docstring).

    Args:
        tables: table names, in profile order.
        max_ids: most ids kept, all tables and runs together (0 records nothing).
        run_batches: batches per run.
        seed: seeds the run keys (fold in the rank when ranks record separately).
    """

    def __init__(
        self, tables: Sequence[str], max_ids: int, run_batches: int = 8, seed: int | Sequence = 0
    ) -> None:
        if max_ids < 0 or run_batches < 1:
            raise ValueError(
                f"need max_ids >= 0 and run_batches >= 1, got {max_ids}, {run_batches}"
            )
        self.tables = list(tables)
        self.max_ids = int(max_ids)
        self.run_batches = int(run_batches)
        self._rng = np.random.default_rng(seed)
        self._kept: list[TraceRun] = []
        self._open: TraceRun | None = None  # run being recorded
        self._left = 0  # batches left in the current run (recorded or skipped)
        self._window: str | None = None
        self.window_order: list[str] = []  # windows in the order they were first seen
        self._window_samples: dict[str, int] = {}
        self._kept_ids = 0
        self._last_run_ids = 0

    # ---- recording ----------------------------------------------------------------------
    def record(
        self,
        window: str,
        chunk: IdChunk,
        feature_to_table: Mapping[str, str],
        batch_size: int | None = None,
    ) -> None:
        """Offers the chunk's batches (of `batch_size` samples; the whole chunk when None)."""
        n = chunk.num_samples
        start = self._window_samples.get(window, 0)
        self._window_samples[window] = start + n
        if self.max_ids == 0 or n == 0:
            return
        if window != self._window:
            self._finish_run()
            self._left = 0
            self._window = window
            if window not in self.window_order:
                self.window_order.append(window)
        size = n if batch_size is None else max(1, int(batch_size))
        offsets: dict[str, torch.Tensor | None] = {}
        for s0 in range(0, n, size):
            s1 = min(n, s0 + size)
            if self._left == 0:
                self._start_run(window, start + s0)
            self._left -= 1
            if self._open is not None:
                self._add_batch(chunk, feature_to_table, offsets, s0, s1)
            if self._left == 0:
                self._finish_run()

    def _start_run(self, window: str, start_sample: int) -> None:
        self._finish_run()
        self._left = self.run_batches
        key = float(self._rng.random())
        # full: another run of the last run's size would not fit next to the kept ones
        full = self._kept_ids + self._last_run_ids > self.max_ids
        if full and self._kept and key >= self._kept[-1].key:
            self._open = None  # cannot displace any kept run
            return
        run = TraceRun(key, window, start_sample)
        run.ids = {t: [] for t in self.tables}
        run.offsets = {t: [0] for t in self.tables}
        self._open = run

    def _add_batch(
        self,
        chunk: IdChunk,
        feature_to_table: Mapping[str, str],
        offsets: dict[str, torch.Tensor | None],
        s0: int,
        s1: int,
    ) -> None:
        run = self._open
        assert run is not None
        added = dict.fromkeys(self.tables, 0)
        for name, f in chunk.features.items():
            if name not in offsets:
                offsets[name] = None if f.lengths is None else f.sample_offsets(chunk.num_samples)
            off = offsets[name]
            lo, hi = (s0, s1) if off is None else (int(off[s0]), int(off[s1]))
            table = feature_to_table[name]
            run.ids[table].append(f.values[lo:hi].numpy().astype(np.int64))
            added[table] += hi - lo
        for table in self.tables:
            run.offsets[table].append(run.offsets[table][-1] + added[table])
        run.batch_samples.append(s1 - s0)

    def _finish_run(self) -> None:
        run, self._open = self._open, None
        if run is None or run.num_batches == 0:
            return
        run._close()
        self._last_run_ids = run.num_ids
        self._keep([run])

    def _keep(self, runs: Sequence[TraceRun]) -> None:
        """Adds `runs` and drops the largest keys until the ids fit `max_ids`."""
        kept = sorted([*self._kept, *runs], key=lambda r: r.key)
        total, out = 0, []
        for run in kept:
            if total + run.num_ids > self.max_ids:
                break
            out.append(run)
            total += run.num_ids
        self._kept = out  # sorted by key
        self._kept_ids = total

    def clear(self) -> None:
        """Drops every run (kept and open)."""
        self._kept, self._open, self._left, self._kept_ids = [], None, 0, 0

    def add_runs(self, runs: Sequence[TraceRun]) -> None:
        """Adds closed runs (from a file or another trace) under the same bottom-k rule."""
        self._keep(runs)
        self.window_order += [r.window for r in runs if r.window not in self.window_order]

    def flush(self) -> None:
        """Closes the run being recorded (the next batch starts a new one)."""
        self._finish_run()
        self._left = 0

    # ---- reading and merging ------------------------------------------------------------
    @property
    def runs(self) -> list[TraceRun]:
        """Kept runs (including the one being recorded, closed), by window then position."""
        self.flush()
        order = {w: i for i, w in enumerate(self.window_order)}
        return sorted(
            self._kept, key=lambda r: (order.get(r.window, len(order)), r.start_sample, r.key)
        )

    @property
    def num_ids(self) -> int:
        return sum(r.num_ids for r in self.runs)

    def merge(self, other: IdTrace) -> None:
        """Adds `other`'s runs (same tables); keeps the smallest keys within `max_ids`."""
        if other.tables != self.tables:
            raise ValueError(f"cannot merge traces of tables {other.tables} into {self.tables}")
        self.flush()
        self._keep(other.runs)
        self.window_order += [w for w in other.window_order if w not in self.window_order]
