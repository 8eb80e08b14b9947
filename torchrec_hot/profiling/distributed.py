"""All-reduce merge of profiles under torch.distributed: every rank profiles its share of the
input, then `all_reduce_profile` leaves every rank with the profile of all of it.

Exact counts are summed with `all_reduce` in slices of `_SLICE` rows (int64 on the wire, so the
sum cannot overflow, and memory grows by one slice); sketches, window counters and trace runs are
gathered and merged in rank order with the same rules as `merge_profiles`, so the result is
identical on every rank and equal to profiling all the input in one process (exactly, for exact
tables)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from torchrec_hot.profiling.counters import ExactCounter, HeavyHitterSketch
from torchrec_hot.profiling.merge import merge_compatibility
from torchrec_hot.profiling.profile import PopularityProfile, Window

_SLICE = 1 << 23


def _gather(obj: object, group: dist.ProcessGroup | None) -> list:
    out: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(out, obj, group=group)
    return out


def all_reduce_profile(profile: PopularityProfile, group: dist.ProcessGroup | None = None) -> None:
    """Merges the profiles of all ranks of `group` into `profile`, on every rank (collective:
    every rank must call it). Raises `ValueError` on every rank if the profiles differ in
    tables, modes or the sample rates of shared windows."""
    metas = _gather(
        (
            [t.to_json() for t in profile.tables],
            {t.name: profile.sketch_capacity(t.name) for t in profile.tables},
            [(w, profile.window_data(w).sample_rate) for w in profile.windows],
        ),
        group,
    )
    shadows = [_shadow(profile, m) for m in metas]
    problems = merge_compatibility(shadows)
    if problems:
        raise ValueError("cannot all-reduce the ranks' profiles:\n  " + "\n  ".join(problems))
    names: list[str] = []
    for _, _, windows in metas:
        names += [n for n, _ in windows if n not in names]
    rates = {n: r for _, _, windows in metas for n, r in windows}
    for name in names:  # every rank gets every window, in the same order
        if name not in profile.windows:
            profile.add_window(_empty_window(profile, name, rates[name]))
    profile.reorder_windows(names)
    for name in names:
        _reduce_window(profile, profile.window_data(name), group)
    runs = _gather(profile.trace.runs, group)
    profile.trace.clear()
    for rank_runs in runs:
        profile.trace.add_runs(rank_runs)


def _shadow(profile: PopularityProfile, meta: tuple) -> PopularityProfile:
    """A counter-less profile with a rank's tables, modes and windows, to check compatibility."""
    from torchrec_hot.tables.spec import TableSpec

    tables, capacities, windows = meta
    shadow = PopularityProfile(
        [TableSpec.from_json(t) for t in tables],
        sketch_capacities={k: v for k, v in capacities.items() if v},
        trace_max_ids=0,
    )
    for name, rate in windows:
        shadow.add_window(Window(name, rate, counters={}, sum_sq={}))
    return shadow


def _empty_window(profile: PopularityProfile, name: str, rate: float) -> Window:
    w = Window(name, rate)
    for t in profile.tables:
        capacity = profile.sketch_capacity(t.name)
        w.counters[t.name] = (
            ExactCounter(t.num_embeddings)
            if capacity is None
            else HeavyHitterSketch(t.num_embeddings, capacity)
        )
        w.sum_sq[t.name] = 0
    return w


def _reduce_window(profile: PopularityProfile, w: Window, group) -> None:
    tables = [t.name for t in profile.tables]
    scalars = torch.tensor(
        [w.num_samples, w.num_batches, w.sampled_samples]
        + [w.sum_sq[t] for t in tables]
        + [w.counters[t].total for t in tables],
        dtype=torch.int64,
    )
    dist.all_reduce(scalars, group=group)
    values = scalars.tolist()
    w.num_samples, w.num_batches, w.sampled_samples = values[:3]
    for i, t in enumerate(tables):
        w.sum_sq[t] = values[3 + i]
        counter = w.counters[t]
        if isinstance(counter, ExactCounter):
            w.counters[t] = _reduce_exact(counter, group)
        else:
            merged = HeavyHitterSketch(counter.num_rows, counter.capacity)
            for other in _gather(counter, group):
                merged.merge(other)
            w.counters[t] = merged
        assert w.counters[t].total == values[3 + len(tables) + i]


def _reduce_exact(counter: ExactCounter, group) -> ExactCounter:
    local = counter.raw()
    out = torch.empty(counter.num_rows, dtype=torch.int64)
    for start in range(0, counter.num_rows, _SLICE):
        part = torch.from_numpy(local[start : start + _SLICE]).to(torch.int64)
        dist.all_reduce(part, group=group)
        out[start : start + part.numel()] = part
    return ExactCounter.from_counts(out.numpy())
