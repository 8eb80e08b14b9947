"""Per-table lookup counters: exact counts, or a heavy-hitter sketch within a memory bound.

`ExactCounter` keeps one counter per row. Counts live in a torch int32 tensor while the table has
seen fewer than 2**31 lookups (no row can overflow then) and move to int64 past that; a batch of
ids is counted with `torch.bincount` when the table is small next to the batch and with
`scatter_add_` of ones otherwise (fastest of np.bincount / np.add.at / index_add_ / put_ /
scatter_add_ / torch.bincount on this machine: scatter_add_ 110-130M ids/s into 11-49M rows,
index_add_ 68-84M, see docs/BENCHMARKS.md).

`HeavyHitterSketch` is the Misra-Gries frequent-items summary (the algorithm behind Apache
DataSketches' `frequent_items_sketch`), updated a batch at a time with vectorised numpy: the
batch is reduced to (id, count) pairs, added to the tracked counters, and when more than
`capacity` ids are tracked the (capacity+1)-th largest count `t` is subtracted from all of them
(dropping those that reach zero) and added to the sketch's `offset` D. Guarantees (Agarwal et al.,
"Mergeable summaries", 2012), for a table that saw T lookups:
  * a tracked row with counter c has true count f with c <= f <= c + D;
  * an untracked row has f <= D;
  * D <= (T - sum of counters) / (capacity + 1) <= T / (capacity + 1).
Two sketches merge by adding counters and offsets and purging the same way; the bounds hold for
the merged stream. The estimate reported for a tracked row is c + D (exact for a row tracked since
the stream began, as heavy hitters of a stationary stream are).

Memory, per table: exact 8 bytes per row (the int64 worst case; 4 while int32), sketch 16 bytes
per tracked id (int64 id + int64 count).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from torchrec_hot.tables.spec import TableSpec

EXACT_BYTES_PER_ROW = 8
SKETCH_BYTES_PER_COUNTER = 16
MIN_SKETCH_CAPACITY = 64
_INT32_LIMIT = 2**31 - 1
_NONZERO_SLICE = 1 << 20  # rows per slice of `ExactCounter.nonzero` (4 MiB of int32 counts)


_ONES: dict[torch.dtype, torch.Tensor] = {}


def _ones(n: int, dtype: torch.dtype) -> torch.Tensor:
    """n ones of `dtype`, contiguous (a view of one shared buffer, grown when too short)."""
    ones = _ONES.get(dtype)
    if ones is None or ones.numel() < n:
        ones = _ONES[dtype] = torch.ones(max(n, 1 << 16), dtype=dtype)
    return ones[:n]


class ExactCounter:
    """Exact lookups per row of one table of `num_rows` rows."""

    mode = "exact"

    def __init__(self, num_rows: int) -> None:
        self.num_rows = int(num_rows)
        self._counts = torch.zeros(self.num_rows, dtype=torch.int32)
        self.total = 0
        self._version = 0  # bumped by every change to the counts
        self._nonzero: tuple[int, np.ndarray, np.ndarray] | None = None

    def add(self, ids: torch.Tensor) -> None:
        """Counts `ids` (1-D int32/int64 tensor, every value already checked in range)."""
        n = int(ids.numel())
        if n == 0:
            return
        if self._counts.dtype == torch.int32 and self.total + n > _INT32_LIMIT:
            self._counts = self._counts.to(torch.int64)
        if self.num_rows <= max(n // 4, 1024):
            self._counts += torch.bincount(ids, minlength=self.num_rows).to(self._counts.dtype)
        else:
            self._counts.scatter_add_(0, ids.to(torch.int64), _ones(n, self._counts.dtype))
        self.total += n
        self._version += 1

    def add_counts(self, counts: np.ndarray) -> None:
        """Adds a whole count vector (length num_rows, any int dtype)."""
        extra = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.int64))
        self.total += int(extra.sum())
        if self._counts.dtype == torch.int32 and self.total > _INT32_LIMIT:
            self._counts = self._counts.to(torch.int64)
        self._counts += extra.to(self._counts.dtype)
        self._version += 1

    def counts(self) -> np.ndarray:
        """Lookups per row: int64 array of length num_rows (a copy)."""
        return self._counts.numpy().astype(np.int64)

    def raw(self) -> np.ndarray:
        """The counters as stored (int32 or int64), not copied."""
        return self._counts.numpy()

    def nonzero(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows, counts) of the rows counted at least once: rows ascending, uint32 (int64 for
        tables of more than 2^32 rows), counts as stored (int32 or int64). Kept until the next
        change, so a summary and a save of the same counts find the rows once. Found
        `_NONZERO_SLICE` rows at a time into arrays of the final size: no int64 row array of
        every counted row and no second copy to narrow it (those fresh pages were half of a
        save's time)."""
        if self._nonzero is None or self._nonzero[0] != self._version:
            raw = self.raw()
            rows = np.empty(int(np.count_nonzero(raw)), dtype=self.row_dtype)
            counts = np.empty(rows.size, dtype=raw.dtype)
            at = 0
            for start in range(0, raw.size, _NONZERO_SLICE):
                part = raw[start : start + _NONZERO_SLICE]
                found = np.flatnonzero(part)
                np.add(found, start, out=rows[at : at + found.size], casting="unsafe")
                np.take(part, found, out=counts[at : at + found.size])
                at += found.size
            self._nonzero = (self._version, rows, counts)
        return self._nonzero[1], self._nonzero[2]

    @property
    def row_dtype(self) -> np.dtype:
        """The narrowest dtype of `nonzero`'s rows: uint32 up to 2^32 rows, else int64."""
        return np.dtype(np.uint32 if self.num_rows <= 2**32 else np.int64)

    @property
    def nbytes(self) -> int:
        return int(self._counts.numel() * self._counts.element_size())

    @staticmethod
    def from_counts(counts: np.ndarray) -> ExactCounter:
        """A counter holding `counts` (length num_rows, non-negative, any int dtype; copied)."""
        counter = ExactCounter(counts.shape[0])
        counter.total = int(counts.sum(dtype=np.int64))
        dtype = np.int32 if counter.total <= _INT32_LIMIT else np.int64
        counter._counts = torch.from_numpy(np.array(counts, dtype=dtype))
        counter._version += 1
        return counter

    @staticmethod
    def from_nonzero(num_rows: int, rows: np.ndarray, counts: np.ndarray) -> ExactCounter:
        """A counter of `num_rows` rows whose rows `rows` (distinct, in range: the caller
        checks) hold `counts` (non-negative ints) and every other row 0; counts are scattered
        straight into the int32 (or, past 2^31 lookups, int64) counters, no int64 detour."""
        counter = ExactCounter(num_rows)
        counter.total = int(counts.sum(dtype=np.int64))
        if counter.total > _INT32_LIMIT:
            counter._counts = torch.zeros(counter.num_rows, dtype=torch.int64)
        counter.raw()[rows] = counts
        counter._version += 1
        return counter


class HeavyHitterSketch:
    """Misra-Gries summary of one table's lookups tracking at most `capacity` ids."""

    mode = "sketch"

    def __init__(self, num_rows: int, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"sketch capacity must be >= 1, got {capacity}")
        self.num_rows = int(num_rows)
        self.capacity = int(capacity)
        self.ids = np.zeros(0, dtype=np.int64)  # sorted ascending
        self.counters = np.zeros(0, dtype=np.int64)
        self.offset = 0  # D: the most any count is underestimated by
        self.total = 0

    def add(self, ids: torch.Tensor) -> None:
        """Adds a batch of ids (1-D int tensor, already checked in range)."""
        if ids.numel() == 0:
            return
        # np.sort (vectorised) is ~20x faster than torch.unique on CPU here
        values = np.sort(ids.numpy())
        starts = np.flatnonzero(np.concatenate([[True], values[1:] != values[:-1]]))
        counts = np.diff(np.append(starts, values.size))
        self.total += int(values.size)
        self._absorb(values[starts].astype(np.int64), counts.astype(np.int64))

    @staticmethod
    def from_state(
        num_rows: int, capacity: int, ids: np.ndarray, counters: np.ndarray, offset: int, total: int
    ) -> HeavyHitterSketch:
        """A sketch with the given tracked ids (sorted, unique), counters, offset and total."""
        sketch = HeavyHitterSketch(num_rows, capacity)
        sketch.ids = np.asarray(ids, dtype=np.int64)
        sketch.counters = np.asarray(counters, dtype=np.int64)
        sketch.offset, sketch.total = int(offset), int(total)
        return sketch

    def _absorb(self, ids: np.ndarray, counts: np.ndarray) -> None:
        if self.ids.size:
            pos = np.minimum(np.searchsorted(self.ids, ids), self.ids.size - 1)
            hit = self.ids[pos] == ids
            self.counters[pos[hit]] += counts[hit]
            ids, counts = ids[~hit], counts[~hit]
        if ids.size == 0:
            return
        if self.ids.size + ids.size > self.capacity:
            cut = self.ids.size + ids.size - self.capacity - 1
            threshold = int(np.partition(np.concatenate([self.counters, counts]), cut)[cut])
            self.offset += threshold
            old = self.counters > threshold
            self.ids, self.counters = self.ids[old], self.counters[old] - threshold
            new = counts > threshold
            ids, counts = ids[new], counts[new] - threshold
        # both sorted: an O(n) merge keeps the tracked ids sorted
        at = np.searchsorted(self.ids, ids)
        self.ids = np.insert(self.ids, at, ids)
        self.counters = np.insert(self.counters, at, counts)

    def merge(self, other: HeavyHitterSketch) -> None:
        """Adds `other`'s stream (same table) by the Misra-Gries merge rule."""
        self.total += other.total
        self.offset += other.offset
        self._absorb(other.ids.copy(), other.counters.copy())

    @property
    def error_bound(self) -> int:
        """D: every tracked row's true count is in [estimate - D, estimate], every untracked
        row's true count is at most D (lookups)."""
        return int(self.offset)

    def estimates(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, estimated counts) of the tracked rows: ids sorted, estimates = counter + D."""
        return self.ids.copy(), self.counters + self.offset

    def counts(self) -> np.ndarray:
        """Dense int64 estimates of length num_rows: tracked rows get counter + D; the lookups
        no tracked row accounts for are spread evenly over the untracked rows, at most D and
        at most the smallest tracked estimate each, so the total matches `total` whenever the
        bounds allow and no untracked row outranks a tracked one."""
        dense = np.zeros(self.num_rows, dtype=np.int64)
        ids, est = self.estimates()
        dense[ids] = est
        untracked = self.num_rows - ids.size
        residual = self.total - int(est.sum())
        if untracked > 0 and residual > 0:
            cap = min(self.offset, int(est.min()) if est.size else self.offset)
            each, extra = divmod(residual, untracked)
            if each >= cap:
                each, extra = cap, 0
            mask = np.ones(self.num_rows, dtype=bool)
            mask[ids] = False
            free = np.flatnonzero(mask)
            dense[free] = each
            if extra:
                dense[free[:extra]] += 1
        return dense

    @property
    def nbytes(self) -> int:
        return self.capacity * SKETCH_BYTES_PER_COUNTER


Counter = ExactCounter | HeavyHitterSketch


def plan_sketch_capacities(
    tables: Sequence[TableSpec], max_bytes: int | None
) -> dict[str, int | None]:
    """Which tables get exact counters (None) and which a sketch (its capacity in ids), so that
    all counters of one window fit `max_bytes`: the largest tables become sketches first, and
    the bytes the exact tables leave are shared among the sketches in proportion to rows."""
    modes: dict[str, int | None] = {t.name: None for t in tables}
    if max_bytes is None:
        return modes
    by_size = sorted(tables, key=lambda t: (-t.num_embeddings, t.name))
    for j in range(len(by_size) + 1):
        sketched, exact = by_size[:j], by_size[j:]
        left = max_bytes - EXACT_BYTES_PER_ROW * sum(t.num_embeddings for t in exact)
        if left < 0:
            continue
        rows = sum(t.num_embeddings for t in sketched)
        caps = {
            t.name: int(left * t.num_embeddings / rows) // SKETCH_BYTES_PER_COUNTER
            for t in sketched
        }
        if all(c >= MIN_SKETCH_CAPACITY for c in caps.values()):
            modes.update(caps)
            return modes
    need = MIN_SKETCH_CAPACITY * SKETCH_BYTES_PER_COUNTER * len(tables)
    raise ValueError(
        f"max memory {max_bytes} bytes is too small for {len(tables)} tables: a sketch needs "
        f"at least {MIN_SKETCH_CAPACITY} counters ({need} bytes for all tables as sketches)"
    )
