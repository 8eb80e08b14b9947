"""Profile comparison shared by the file-format tests."""

from __future__ import annotations

import numpy as np

from torchrec_hot import PopularityProfile


def assert_same_profile(a: PopularityProfile, b: PopularityProfile) -> None:
    """Every field two profiles hold is equal: tables, windows, counters of input, exact
    counts, lookups, sketch bounds and capacities, sums of squares, sample rate, seed, the
    trace's runs with all their ids."""
    assert a.tables == b.tables and a.windows == b.windows
    assert (a.sample_rate, a.seed) == (b.sample_rate, b.seed)
    assert (a.num_samples, a.num_batches) == (b.num_samples, b.num_batches)
    for w in a.windows:
        wa, wb = a.window_data(w), b.window_data(w)
        assert (wa.sample_rate, wa.num_samples, wa.num_batches, wa.sampled_samples) == (
            wb.sample_rate, wb.num_samples, wb.num_batches, wb.sampled_samples)
        for t in a.tables:
            assert a.sketch_capacity(t.name) == b.sketch_capacity(t.name)
            np.testing.assert_array_equal(a.counts(t.name, w), b.counts(t.name, w))
            assert a.lookups(t.name, w) == b.lookups(t.name, w)
            assert a.error_bound(t.name, w) == b.error_bound(t.name, w)
            assert wa.sum_sq[t.name] == wb.sum_sq[t.name]
    assert a.trace.window_order == b.trace.window_order
    ra, rb = a.trace.runs, b.trace.runs
    assert [(r.key, r.window, r.start_sample, list(r.batch_samples)) for r in ra] == [
        (r.key, r.window, r.start_sample, list(r.batch_samples)) for r in rb
    ]
    for x, y in zip(ra, rb, strict=True):
        for t in a.tables:
            for bx, by in zip(x.batches(t.name), y.batches(t.name), strict=True):
                assert by.dtype == np.int64
                np.testing.assert_array_equal(bx, by)
