"""The reference for `choice.choose_strategies`: the exact optimum by Pareto enumeration of
(bytes, F, G) over partial choices (exponential in the worst case; for tests and small models;
F, G and the objective as in `choice`'s module docstring)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from torchrec_hot.planner.strategy.choice import (
    Choice,
    Curves,
    Option,
    objective,
    per_cache_kinds,
)
from torchrec_hot.planner.strategy.cost_model import CostModel


def choose_strategies_exact(
    curves: Curves, row_bytes: Mapping[str, int], budget_bytes: int, cost_model: CostModel
) -> Choice:
    """The optimum, by Pareto enumeration of (bytes, F, G) over partial choices (slow)."""

    def solve(options: dict[str, list[Option]], const: float) -> tuple[list[int], float]:
        states: list[tuple[int, float, float, tuple[int, ...]]] = [(0, 0.0, 0.0, ())]
        for table in options:
            grown = [
                (s[0] + o.hbm_bytes, s[1] + o.f, s[2] + o.g, (*s[3], i))
                for s in states
                for i, o in enumerate(options[table])
                if s[0] + o.hbm_bytes <= budget_bytes
            ]
            grown.sort(key=lambda s: (s[0], s[1], s[2]))
            states, kept_f, kept_g = [], np.empty(len(grown)), np.empty(len(grown))
            for s in grown:  # keep s unless an earlier (fewer-bytes) state is no worse in F, G
                n = len(states)
                if not np.any((kept_f[:n] <= s[1]) & (kept_g[:n] <= s[2])):
                    kept_f[n], kept_g[n] = s[1], s[2]
                    states.append(s)
        best = min(states, key=lambda s: objective(s[1], s[2], const))
        return list(best[3]), objective(best[1], best[2], const)

    return per_cache_kinds(solve, curves, row_bytes, budget_bytes, cost_model)
