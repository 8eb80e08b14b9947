"""Profile files: one `.npz` (no pickles), format version 2; version-1 files still load.

Layout of version 2: `meta` (JSON: magic, format_version, tables, per-table sketch capacity,
sample rate, seed, windows with their counters of input and per-table totals, sketch offsets and
sums of squares, the trace's runs) and arrays:
  w{j}_counts_{i}                  exact counts of table i in window j (int32 or int64)
  w{j}_ids_{i}, w{j}_counters_{i}  a sketched table's tracked ids (sorted) and counters (int64)
  trace_batch_samples              samples per batch of every trace run, run after run
  trace_ids_{i}, trace_offsets_{i} table i's trace ids of all runs, and per run its
                                   (num_batches + 1) offsets
Version 1 (torchrec-hot 0.1): one exact int64 `counts_{i}` per table and `num_batches`,
`num_samples`; it loads as one window named "default".
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from torchrec_hot.profiling.counters import ExactCounter, HeavyHitterSketch
from torchrec_hot.profiling.profile import DEFAULT_WINDOW, PopularityProfile, Window
from torchrec_hot.profiling.trace import TraceRun
from torchrec_hot.tables.spec import TableSpec

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAGIC = "torchrec-hot-profile"


class ProfileFormatError(ValueError):
    """A profile file is missing, truncated, corrupt or of an unknown format version."""


def save_profile(profile: PopularityProfile, path: str | Path) -> None:
    """Writes `profile` to one `.npz` file at `path`."""
    specs = profile.tables
    arrays: dict[str, np.ndarray] = {}
    windows = []
    for j, name in enumerate(profile.windows):
        w = profile.window_data(name)
        offsets = []
        for i, t in enumerate(specs):
            counter = w.counters[t.name]
            if isinstance(counter, ExactCounter):
                arrays[f"w{j}_counts_{i}"] = counter.raw()
                offsets.append(0)
            else:
                arrays[f"w{j}_ids_{i}"] = counter.ids
                arrays[f"w{j}_counters_{i}"] = counter.counters
                offsets.append(counter.offset)
        windows.append(
            {
                "name": w.name,
                "sample_rate": w.sample_rate,
                "num_samples": w.num_samples,
                "num_batches": w.num_batches,
                "sampled_samples": w.sampled_samples,
                "totals": [w.counters[t.name].total for t in specs],
                "sketch_offsets": offsets,
                "sum_sq": [w.sum_sq[t.name] for t in specs],
            }
        )
    runs = profile.trace.runs
    if runs:
        arrays["trace_batch_samples"] = np.concatenate(
            [np.asarray(r.batch_samples, dtype=np.int64) for r in runs]
        )
        for i, t in enumerate(specs):
            arrays[f"trace_ids_{i}"] = np.concatenate([r.ids[t.name] for r in runs])
            arrays[f"trace_offsets_{i}"] = np.concatenate([r.offsets[t.name] for r in runs])
    meta = {
        "magic": MAGIC,
        "format_version": FORMAT_VERSION,
        "tables": [t.to_json() for t in specs],
        "sketch_capacities": [profile.sketch_capacity(t.name) for t in specs],
        "sample_rate": profile.sample_rate,
        "seed": profile.seed,
        "windows": windows,
        "trace": {
            "max_ids": profile.trace.max_ids,
            "run_batches": profile.trace.run_batches,
            "window_order": profile.trace.window_order,
            "runs": [
                {
                    "key": r.key,
                    "window": r.window,
                    "start_sample": r.start_sample,
                    "num_batches": r.num_batches,
                }
                for r in runs
            ],
        },
    }
    with open(path, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)


def load_profile(path: str | Path) -> PopularityProfile:
    """Reads a profile written by `save_profile` (format 1 or 2); raises `ProfileFormatError`
    naming the problem on a missing, truncated, corrupt or foreign file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if not isinstance(meta, dict) or meta.get("magic") != MAGIC:
                raise ProfileFormatError(f"{path} is not a torchrec-hot profile")
            version = meta.get("format_version")
            if version not in READABLE_VERSIONS:
                raise ProfileFormatError(
                    f"{path} has profile format version {version}, this torchrec-hot reads "
                    f"versions {', '.join(map(str, READABLE_VERSIONS))}"
                )
            if version == 1:
                return _load_v1(path, meta, data)
            return _load_v2(path, meta, data)
    except ProfileFormatError:
        raise
    except FileNotFoundError as e:
        raise ProfileFormatError(f"profile file {path} does not exist") from e
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, OSError, TypeError) as e:
        raise ProfileFormatError(
            f"{path} is not a readable torchrec-hot profile (corrupt or truncated?): {e}"
        ) from e


def _array(path, data, key: str, shape: tuple[int, ...] | None, dtypes, what: str) -> np.ndarray:
    a = np.asarray(data[key])
    if (shape is not None and a.shape != shape) or a.dtype not in dtypes or a.ndim != 1:
        want = f"{shape} " if shape is not None else "1-D "
        raise ProfileFormatError(
            f"{path}: {what} have shape {a.shape} and dtype {a.dtype}, expected {want}"
            + " or ".join(str(np.dtype(d)) for d in dtypes)
        )
    return a


def _load_v1(path, meta: dict, data) -> PopularityProfile:
    specs = [TableSpec.from_json(t) for t in meta["tables"]]
    profile = PopularityProfile(specs)
    w = Window(DEFAULT_WINDOW, 1.0, int(meta["num_samples"]), int(meta["num_batches"]))
    w.sampled_samples = w.num_samples
    for i, spec in enumerate(specs):
        counts = _array(
            path,
            data,
            f"counts_{i}",
            (spec.num_embeddings,),
            (np.int64,),
            f"counts of table {spec.name!r}",
        )
        w.counters[spec.name] = ExactCounter.from_counts(counts)
        w.sum_sq[spec.name] = w.counters[spec.name].total  # unknown in v1: assume 1 id/sample
    profile.add_window(w)
    return profile


def _load_v2(path, meta: dict, data) -> PopularityProfile:
    specs = [TableSpec.from_json(t) for t in meta["tables"]]
    capacities = meta["sketch_capacities"]
    trace_meta = meta["trace"]
    profile = PopularityProfile(
        specs,
        sketch_capacities={t.name: c for t, c in zip(specs, capacities, strict=True) if c},
        sample_rate=float(meta["sample_rate"]),
        seed=int(meta["seed"]),
        trace_max_ids=int(trace_meta["max_ids"]),
        trace_run_batches=int(trace_meta["run_batches"]),
    )
    for j, wm in enumerate(meta["windows"]):
        w = Window(
            str(wm["name"]),
            float(wm["sample_rate"]),
            int(wm["num_samples"]),
            int(wm["num_batches"]),
            int(wm["sampled_samples"]),
        )
        for i, spec in enumerate(specs):
            what = f"window {w.name!r} table {spec.name!r}"
            total = int(wm["totals"][i])
            if capacities[i] is None:
                counts = _array(
                    path,
                    data,
                    f"w{j}_counts_{i}",
                    (spec.num_embeddings,),
                    (np.int32, np.int64),
                    f"counts of {what}",
                )
                counter = ExactCounter.from_counts(counts)
                if counter.total != total or (counts < 0).any():
                    raise ProfileFormatError(
                        f"{path}: counts of {what} add up to {counter.total}, the file says {total}"
                    )
            else:
                ids = _array(
                    path, data, f"w{j}_ids_{i}", None, (np.int64,), f"sketch ids of {what}"
                )
                counters = _array(
                    path,
                    data,
                    f"w{j}_counters_{i}",
                    ids.shape,
                    (np.int64,),
                    f"sketch counters of {what}",
                )
                if ids.size and (
                    (np.diff(ids) <= 0).any()
                    or ids[0] < 0
                    or ids[-1] >= spec.num_embeddings
                    or (counters <= 0).any()
                    or ids.size > capacities[i]
                ):
                    raise ProfileFormatError(f"{path}: the sketch of {what} is inconsistent")
                counter = HeavyHitterSketch.from_state(
                    spec.num_embeddings,
                    capacities[i],
                    ids,
                    counters,
                    int(wm["sketch_offsets"][i]),
                    total,
                )
            w.counters[spec.name] = counter
            w.sum_sq[spec.name] = int(wm["sum_sq"][i])
        profile.add_window(w)
    _load_trace(path, profile, specs, trace_meta, data)
    return profile


def _load_trace(path, profile: PopularityProfile, specs, trace_meta: dict, data) -> None:
    runs_meta = trace_meta["runs"]
    profile.trace.window_order = list(trace_meta["window_order"])
    if not runs_meta:
        return
    num_batches = [int(r["num_batches"]) for r in runs_meta]
    samples = _array(
        path, data, "trace_batch_samples", (sum(num_batches),), (np.int64,), "trace batch sizes"
    )
    runs = []
    b0 = 0
    for r in runs_meta:
        nb = int(r["num_batches"])
        runs.append(
            TraceRun(
                float(r["key"]),
                str(r["window"]),
                int(r["start_sample"]),
                samples[b0 : b0 + nb].tolist(),
                {},
                {},
            )
        )
        b0 += nb
    for i, spec in enumerate(specs):
        offsets = _array(
            path,
            data,
            f"trace_offsets_{i}",
            (sum(num_batches) + len(runs),),
            (np.int64,),
            f"trace offsets of table {spec.name!r}",
        )
        ids = _array(path, data, f"trace_ids_{i}", None, (np.int64,), f"trace of {spec.name!r}")
        o0 = i0 = 0
        for run in runs:
            offs = offsets[o0 : o0 + run.num_batches + 1]
            o0 += run.num_batches + 1
            if offs[0] != 0 or (np.diff(offs) < 0).any() or i0 + offs[-1] > ids.size:
                raise ProfileFormatError(
                    f"{path}: the trace of table {spec.name!r} is inconsistent"
                )
            run.ids[spec.name] = ids[i0 : i0 + offs[-1]]
            run.offsets[spec.name] = offs
            i0 += int(offs[-1])
    profile.trace.add_runs(runs)
