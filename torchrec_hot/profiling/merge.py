"""Merging profiles made separately (other jobs, other ranks): exact counts add, sketches merge
by the Misra-Gries rule, windows of the same name combine, traces keep their bottom-k runs."""

from __future__ import annotations

from collections.abc import Sequence

from torchrec_hot.profiling.counters import ExactCounter, HeavyHitterSketch
from torchrec_hot.profiling.profile import PopularityProfile, Window
from torchrec_hot.tables.spec import table_differences


def merge_compatibility(profiles: Sequence[PopularityProfile]) -> list[str]:
    """Why `profiles` cannot be merged, one line per reason (empty when they can)."""
    first = profiles[0]
    problems: list[str] = []
    for i, other in enumerate(profiles[1:], start=1):
        diffs = table_differences(first.tables, other.tables)
        problems += [f"profile {i}: {d.replace('the model', 'profile 0')}" for d in diffs]
        for t in first.tables:
            if any(t.name == o.name for o in other.tables) and first.mode(t.name) != other.mode(
                t.name
            ):
                problems.append(
                    f"profile {i}: table {t.name!r} is {other.mode(t.name)}, "
                    f"profile 0 has it {first.mode(t.name)}"
                )
        for name in set(first.windows) & set(other.windows):
            a = first.window_data(name).sample_rate
            b = other.window_data(name).sample_rate
            if a != b:
                problems.append(
                    f"profile {i}: window {name!r} was sampled at {b}, profile 0 at {a}"
                )
    return problems


def merge_windows(a: Window, b: Window) -> Window:
    """A new window holding the input of both (same name and sample rate)."""
    out = Window(
        a.name,
        a.sample_rate,
        a.num_samples + b.num_samples,
        a.num_batches + b.num_batches,
        a.sampled_samples + b.sampled_samples,
    )
    for table, counter in a.counters.items():
        other = b.counters[table]
        if isinstance(counter, ExactCounter):
            merged: ExactCounter | HeavyHitterSketch = ExactCounter.from_counts(counter.raw())
            merged.add_counts(other.raw())  # type: ignore[union-attr]
        else:
            capacity = min(counter.capacity, other.capacity)  # type: ignore[union-attr]
            merged = HeavyHitterSketch(counter.num_rows, capacity)
            merged.merge(counter)
            merged.merge(other)  # type: ignore[arg-type]
        out.counters[table] = merged
        out.sum_sq[table] = a.sum_sq[table] + b.sum_sq[table]
    return out


def merge_profiles(*profiles: PopularityProfile) -> PopularityProfile:
    """A new profile with the input of all `profiles` (left untouched). Raises `ValueError`
    listing every incompatibility (tables, counting modes, sample rates of shared windows)."""
    if not profiles:
        raise ValueError("merge needs at least one profile")
    problems = merge_compatibility(profiles)
    if problems:
        raise ValueError("cannot merge the profiles:\n  " + "\n  ".join(problems))
    first = profiles[0]
    capacities = {
        t.name: min(p.sketch_capacity(t.name) for p in profiles)  # type: ignore[type-var]
        for t in first.tables
        if first.mode(t.name) == "sketch"
    }
    out = PopularityProfile(
        first.tables,
        sketch_capacities=capacities,
        sample_rate=first.sample_rate,
        seed=first.seed,
        trace_max_ids=max(p.trace.max_ids for p in profiles),
        trace_run_batches=first.trace.run_batches,
    )
    windows: dict[str, Window] = {}
    for p in profiles:
        for name in p.windows:
            w = p.window_data(name)
            windows[name] = merge_windows(windows[name], w) if name in windows else _copy(w)
    for w in windows.values():
        out.add_window(w)
    for p in profiles:
        out.trace.add_runs(p.trace.runs)
    return out


def _copy(w: Window) -> Window:
    empty = Window(w.name, w.sample_rate)
    empty.counters = {t: _zero_like(c) for t, c in w.counters.items()}
    empty.sum_sq = dict.fromkeys(w.sum_sq, 0)
    return merge_windows(w, empty)


def _zero_like(counter: ExactCounter | HeavyHitterSketch) -> ExactCounter | HeavyHitterSketch:
    if isinstance(counter, ExactCounter):
        return ExactCounter(counter.num_rows)
    return HeavyHitterSketch(counter.num_rows, counter.capacity)
