"""`PopularityProfile`: lookups per row of every table, per time window, exact or sketched.

A profile holds, for every logical table of a model, the number of lookups of each row seen in
each *window* of input (e.g. one per day; a profile made without naming windows has one,
"default"). Several features may share a table (`EmbeddingBagConfig.feature_names`); their
lookups add up. A weighted feature counts one lookup per id, whatever its weight.

Per table, counting is exact (`ExactCounter`) or, where a memory limit does not allow one
counter per row, a heavy-hitter sketch with a recorded error bound (`HeavyHitterSketch`); the
mode is chosen once per table (`max_memory_bytes`, `sketch_capacities`) and is the same in every
window. Input may be sampled per sample (`sample_rate`, seeded, Bernoulli): counts are kept raw
and scaled by 1 / sample_rate when read, and hot shares come with standard errors
(`hot_share_estimate`). A bounded sample of whole batches is kept as an `IdTrace` for cache
simulations.

Input: `update(kjt)` for KeyedJaggedTensors, `update_chunk(chunk)` for reader chunks
(`torchrec_hot.data.readers`). A chunk is validated whole (known features, ids in range) before
any of it is counted, so a bad chunk raises `ValueError` and changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from torchrec_hot.data.chunk import (
    IdChunk,
    chunk_of_batch,
    sample_chunk,
    sum_squares,
    validate_chunk,
)
from torchrec_hot.profiling.counters import (
    Counter,
    ExactCounter,
    HeavyHitterSketch,
    plan_sketch_capacities,
)
from torchrec_hot.profiling.stats import (
    HotShare,
    exact_hot_share,
    exact_hot_shares,
    sampled_hot_share,
    sketch_hot_share,
)
from torchrec_hot.profiling.table_pool import TablePool
from torchrec_hot.profiling.trace import IdTrace
from torchrec_hot.tables.spec import TableSpec, as_specs, table_differences

if TYPE_CHECKING:  # TorchRec is imported where used: the `profile` command never needs it
    from torchrec import EmbeddingBagConfig, KeyedJaggedTensor

DEFAULT_WINDOW = "default"
DEFAULT_TRACE_IDS = 1 << 21

WindowSelector = str | Sequence[str] | None


@dataclass
class Window:
    """One window's counters and counters of input.

    Attributes:
        name: the window's name.
        sample_rate: share of samples counted (1.0: all).
        num_samples: samples seen (counted or not); num_batches: batches seen.
        sampled_samples: samples counted.
        counters: table -> raw counts of the counted samples.
        sum_sq: table -> sum over counted samples of (lookups of the table in the sample)^2.
    """

    name: str
    sample_rate: float
    num_samples: int = 0
    num_batches: int = 0
    sampled_samples: int = 0
    counters: dict[str, Counter] = field(default_factory=dict)
    sum_sq: dict[str, int] = field(default_factory=dict)


class PopularityProfile:
    """Per-row lookup counts of every table, per window.

    Args:
        tables: the model's tables (`EmbeddingBagConfig`s or `TableSpec`s).
        max_memory_bytes: bound on the counters of one window (exact: 8 bytes per row; sketch:
            16 bytes per tracked id); the largest tables become sketches first. None: exact.
        sketch_capacities: table -> ids a sketch tracks, forcing sketch mode for those tables.
        sample_rate: share of samples counted, in (0, 1].
        seed: seeds sampling and trace selection (fold in the rank: `rank`).
        rank: this process's rank when profiling under torch.distributed.
        trace_max_ids: most ids the trace keeps (0: no trace).
        trace_run_batches: consecutive batches per trace run.
        threads: counting threads (default: min(2, CPUs)).
        ignore_features: features of no profiled table that batches may carry (those of
            modules left to TorchRec's planner): dropped, not counted, not an error.
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig | TableSpec],
        *,
        max_memory_bytes: int | None = None,
        sketch_capacities: Mapping[str, int] | None = None,
        sample_rate: float = 1.0,
        seed: int = 0,
        rank: int = 0,
        trace_max_ids: int = DEFAULT_TRACE_IDS,
        trace_run_batches: int = 8,
        threads: int | None = None,
        ignore_features: Collection[str] = (),
    ) -> None:
        specs = as_specs(tables)
        names = [t.name for t in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"table names must be unique, got {names}")
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self._tables: dict[str, TableSpec] = {t.name: t for t in specs}
        self._feature_to_table: dict[str, str] = {}
        for spec in specs:
            for feature in spec.feature_names:
                if feature in self._feature_to_table:
                    raise ValueError(f"feature {feature!r} is mapped to two tables")
                self._feature_to_table[feature] = spec.name
        # features of modules left to TorchRec (for_model): dropped from batches, not counted
        self._ignored = frozenset(ignore_features) - set(self._feature_to_table)
        self._capacities = plan_sketch_capacities(specs, max_memory_bytes)
        for name, capacity in (sketch_capacities or {}).items():
            self.table(name)
            self._capacities[name] = int(capacity)
        self.sample_rate = float(sample_rate)
        self.seed, self.rank = int(seed), int(rank)
        self._rng = np.random.default_rng([self.seed, self.rank, 1])
        self._windows: dict[str, Window] = {}
        self._current: str | None = None
        self.trace = IdTrace(names, trace_max_ids, trace_run_batches, [self.seed, self.rank, 2])
        self._pool = TablePool(threads)

    @classmethod
    def for_model(cls, model: nn.Module, **kwargs: Any) -> PopularityProfile:
        """A profile of every table of every embedding module of `model` (EBCs, weighted
        or not, and EmbeddingCollections: `tables.modules.model_tables`); `kwargs` as for
        the constructor. Feed it each batch's KJTs together (`update`). The features of modules
        left to TorchRec's planner (e.g. a FeatureProcessedEmbeddingBagCollection) are dropped
        from batches, not counted."""
        from torchrec_hot.tables.modules import model_tables, stock_sharded_features

        tables = [c for configs in model_tables(model).values() for c in configs]
        kwargs.setdefault("ignore_features", stock_sharded_features(model))
        return cls(tables, **kwargs)

    # ---- windows ------------------------------------------------------------------------
    def window(self, name: str | None = None) -> Window:
        """The window `name` (created, and made current, when new); None: the current one."""
        if name is None:
            name = self._current or DEFAULT_WINDOW
        if name not in self._windows:
            self._windows[name] = Window(
                name,
                self.sample_rate,
                counters={t: self._new_counter(t) for t in self._tables},
                sum_sq=dict.fromkeys(self._tables, 0),
            )
        self._current = name
        return self._windows[name]

    def _new_counter(self, table: str) -> Counter:
        rows, capacity = self._tables[table].num_embeddings, self._capacities[table]
        return ExactCounter(rows) if capacity is None else HeavyHitterSketch(rows, capacity)

    def window_data(self, name: str) -> Window:
        """The window `name` itself (not a copy); KeyError if there is none."""
        return self._selected(name)[0]

    def add_window(self, window: Window) -> None:
        """Adds a whole window (its counters must match this profile's tables and modes); used
        by loading and merging. Raises `ValueError` if the name is taken."""
        if window.name in self._windows:
            raise ValueError(f"window {window.name!r} is already in the profile")
        for table, counter in window.counters.items():
            if counter.mode != self.mode(table):
                raise ValueError(
                    f"table {table!r}: a {counter.mode} counter in a {self.mode(table)} profile"
                )
        self._windows[window.name] = window
        self._current = window.name

    def reorder_windows(self, names: Sequence[str]) -> None:
        """Puts the windows in the order of `names` (which must name each exactly once)."""
        if sorted(names) != sorted(self._windows):
            raise ValueError(f"window order {list(names)} does not match {self.windows}")
        self._windows = {n: self._windows[n] for n in names}

    @property
    def windows(self) -> list[str]:
        """Window names, in the order they were created."""
        return list(self._windows)

    def _selected(self, window: WindowSelector) -> list[Window]:
        if window is None:
            return list(self._windows.values())
        names = [window] if isinstance(window, str) else list(window)
        missing = [n for n in names if n not in self._windows]
        if missing:
            raise KeyError(f"no window {missing} in the profile (windows: {self.windows})")
        return [self._windows[n] for n in names]

    # ---- accumulation -------------------------------------------------------------------
    def update(self, batch: KeyedJaggedTensor | object, window: str | None = None) -> None:
        """Adds one batch's lookups to `window` (default the current one). `batch`: a KJT, the
        KJTs of one batch (e.g. a model's unweighted and weighted features), a TorchRec
        `Batch` or `ModelInput` (`data.chunk.batch_kjts`). Each call counts its samples once:
        give one batch's KJTs in one call (two calls count the batch's samples twice). Validates
        every feature before counting any of them: a bad batch raises `ValueError` and changes
        nothing."""
        self.update_chunk(chunk_of_batch(batch), window)

    def update_all(
        self, batches: Iterable[KeyedJaggedTensor | object], window: str | None = None
    ) -> PopularityProfile:
        """Adds every batch of `batches` (KJTs or TorchRec `Batch`es, e.g. a DataLoader);
        returns self."""
        for kjt in batches:
            self.update(kjt, window)
        return self

    def update_chunk(
        self, chunk: IdChunk, window: str | None = None, batch_size: int | None = None
    ) -> None:
        """Adds a chunk of samples, seen as batches of `batch_size` samples (None: one batch)."""
        if self._ignored & chunk.features.keys():
            kept = {k: f for k, f in chunk.features.items() if k not in self._ignored}
            chunk = IdChunk(chunk.num_samples, kept)
        validate_chunk(chunk, self._feature_to_table, self._tables, self._pool.run)
        w = self.window(window)
        self.trace.record(w.name, chunk, self._feature_to_table, batch_size)
        seen = chunk.num_samples
        if w.sample_rate < 1.0:
            chunk = sample_chunk(chunk, w.sample_rate, self._rng)
        per_table: dict[str, list[torch.Tensor]] = {}
        for name, f in chunk.features.items():
            per_table.setdefault(self._feature_to_table[name], []).append(f.values)
        self._count(w, per_table)
        for table, sq in sum_squares(chunk, self._feature_to_table).items():
            w.sum_sq[table] += sq
        w.num_samples += seen
        w.sampled_samples += chunk.num_samples
        w.num_batches += 1 if batch_size is None else max(1, -(-seen // batch_size))

    def _count(self, w: Window, per_table: dict[str, list[torch.Tensor]]) -> None:
        # largest tables first, so the pool's threads finish together
        order = sorted(per_table, key=lambda t: -self._tables[t].num_embeddings)
        jobs = {t: partial(_add_all, w.counters[t], per_table[t]) for t in order}
        self._pool.run(jobs, {t: sum(v.numel() for v in per_table[t]) for t in order})

    # ---- queries ------------------------------------------------------------------------
    @property
    def tables(self) -> list[TableSpec]:
        return list(self._tables.values())

    def table(self, name: str) -> TableSpec:
        if name not in self._tables:
            raise KeyError(f"no table {name!r} in the profile (tables: {list(self._tables)})")
        return self._tables[name]

    @property
    def num_samples(self) -> int:
        """Samples seen, all windows (sampled or not)."""
        return sum(w.num_samples for w in self._windows.values())

    @num_samples.setter
    def num_samples(self, value: int) -> None:
        """Sets the current window's samples so that all windows add up to `value` (0.1 API)."""
        w = self.window()
        w.num_samples += int(value) - self.num_samples
        w.sampled_samples = w.num_samples

    @property
    def num_batches(self) -> int:
        return sum(w.num_batches for w in self._windows.values())

    @num_batches.setter
    def num_batches(self, value: int) -> None:
        w = self.window()
        w.num_batches += int(value) - self.num_batches

    def mode(self, table: str) -> str:
        """ "exact" or "sketch"."""
        self.table(table)
        return "exact" if self._capacities[table] is None else "sketch"

    def sketch_capacity(self, table: str) -> int | None:
        self.table(table)
        return self._capacities[table]

    def counts(self, table: str, window: WindowSelector = None) -> np.ndarray:
        """Lookups per row of `table` in `window` (None: all windows; a name or a list of
        names): int64 array of length num_embeddings (a copy). Sampled windows are scaled by
        1 / sample_rate; sketched tables give sketch estimates (see `HeavyHitterSketch`)."""
        self.table(table)
        total: np.ndarray | None = None
        for w in self._selected(window):
            raw = w.counters[table].counts()  # a fresh int64 array
            part = raw if w.sample_rate == 1.0 else np.rint(raw / w.sample_rate).astype(np.int64)
            if total is None:  # no zero-filled total to add into (a pass over N rows less)
                total = part
            else:
                total += part
        return total if total is not None else np.zeros(
            self._tables[table].num_embeddings, dtype=np.int64
        )

    def lookups(self, table: str, window: WindowSelector = None) -> int:
        """Total lookups of `table` seen (scaled back where sampled)."""
        self.table(table)
        return sum(
            int(round(w.counters[table].total / w.sample_rate)) for w in self._selected(window)
        )

    def error_bound(self, table: str, window: WindowSelector = None) -> int:
        """For a sketched table, the most any row's count may be off by (lookups, scaled);
        0 for exact tables."""
        self.table(table)
        return sum(
            int(round(getattr(w.counters[table], "error_bound", 0) / w.sample_rate))
            for w in self._selected(window)
        )

    def hot_share(self, table: str, k: int, window: WindowSelector = None) -> float:
        """Share (0..1) of `table`'s lookups taken by its `k` most accessed rows."""
        counts = self.counts(table, window)
        return exact_hot_share(counts, k).share

    def hot_share_estimate(self, table: str, k: int, window: WindowSelector = None) -> HotShare:
        """The full-data hot share at `k` rows with its standard error (see `stats`)."""
        return self.hot_share_estimates(table, [k], window)[0]

    def hot_share_estimates(
        self, table: str, ks: Sequence[int], window: WindowSelector = None
    ) -> list[HotShare]:
        """`hot_share_estimate` at each of `ks`, reading the counts once."""
        windows = self._selected(window)
        rates = {w.sample_rate for w in windows}
        rate = rates.pop() if len(rates) == 1 else 1.0  # mixed rates: scaled counts, no SE
        raw_total = sum(w.counters[table].total for w in windows)
        deff = sum(w.sum_sq[table] for w in windows) / max(raw_total, 1)
        if self.mode(table) == "sketch":
            merged = HeavyHitterSketch(self._tables[table].num_embeddings, 1 << 62)
            for w in windows:
                merged.merge(w.counters[table])  # type: ignore[arg-type]
            return [
                sketch_hot_share(
                    merged.counters, merged.offset, raw_total, merged.num_rows, k, rate, deff
                )
                for k in ks
            ]
        if rate == 1.0:  # rows never counted add nothing: the nonzero counts are enough
            if len(windows) == 1:
                return exact_hot_shares(windows[0].counters[table].nonzero()[1], ks)
            counts = self.counts(table, window)
            return exact_hot_shares(counts[counts != 0], ks)
        raw = sum(w.counters[table].counts() for w in windows)
        return [sampled_hot_share(raw, k, rate, deff) for k in ks]

    def check_matches(
        self, tables: Sequence[EmbeddingBagConfig | TableSpec], check_dims: bool = True
    ) -> None:
        """Raises `ValueError` listing every difference between the model's tables and ours
        (names, row counts, features and, unless `check_dims` is False, dims)."""
        diffs = table_differences(as_specs(tables), self.tables, check_dims)
        if diffs:
            raise ValueError(
                "the profile does not match the model's tables:\n  " + "\n  ".join(diffs)
            )

    @property
    def nbytes(self) -> int:
        """Bytes held by the counters of all windows (sketches at capacity)."""
        return sum(c.nbytes for w in self._windows.values() for c in w.counters.values())


def _add_all(counter: Counter, batches: list[torch.Tensor]) -> None:
    for ids in batches:
        counter.add(ids)
