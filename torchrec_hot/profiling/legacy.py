"""`profile._counts[table]`, the count access of torchrec-hot 0.1, kept for code and tests
written against it: reads and replaces the current window's exact counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from torchrec_hot.profiling.counters import ExactCounter

if TYPE_CHECKING:
    from torchrec_hot.profiling.profile import PopularityProfile


class LegacyCounts:
    """Mapping-like: table -> int64 tensor of the current window's counts."""

    def __init__(self, profile: PopularityProfile) -> None:
        self._profile = profile

    def __getitem__(self, table: str) -> torch.Tensor:
        return torch.from_numpy(self._profile.window().counters[table].counts())

    def __setitem__(self, table: str, counts: torch.Tensor) -> None:
        if self._profile.mode(table) != "exact":
            raise ValueError(f"table {table!r} is sketched: its counts cannot be set")
        w = self._profile.window()
        w.counters[table] = ExactCounter.from_counts(counts.numpy())
        w.sum_sq[table] = w.counters[table].total
