"""Profile files: one uncompressed `.npz` (no pickles), format version 3; files of versions 1
and 2 still load, others fail with `ProfileFormatError`.

Layout of version 3: `meta` (JSON: magic, format_version, tables, per-table sketch capacity,
sample rate, seed, windows with their counters of input and per-table totals, counts layouts,
sketch offsets and sums of squares, the trace's runs) and arrays:
  w{j}_counts_{i} [, w{j}_rows_{i}]  exact counts of table i in window j, "dense" (one count per
                                   row) or "sparse" (ascending rows counted at least once and
                                   their counts), as the window's `layouts[i]` says, with the
                                   narrowest count dtype (`count_codec`: exact counts take
                                   bytes in proportion to the rows counted, not to all rows)
  w{j}_ids_{i}, w{j}_counters_{i}  a sketched table's tracked ids (sorted) and counters (int64)
  trace_batch_samples              samples per batch of every trace run, run after run
  trace_ids_{i}, trace_offsets_{i} table i's trace ids of all runs (int32 when the table has
                                   fewer than 2^31 rows, else int64), and per run its
                                   (num_batches + 1) offsets
Version 2 (before sparse counts): the same with dense int32/int64 counts, no `layouts`, int64
trace ids. Version 1 (torchrec-hot 0.1): one exact int64 `counts_{i}` per table and `num_batches`,
`num_samples`; it loads as one window named "default".
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from torchrec_hot.profiling.count_codec import decode_counts, encode_all
from torchrec_hot.profiling.counters import ExactCounter, HeavyHitterSketch
from torchrec_hot.profiling.profile import DEFAULT_WINDOW, PopularityProfile, Window
from torchrec_hot.profiling.trace import TraceRun
from torchrec_hot.tables.spec import TableSpec

FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAGIC = "torchrec-hot-profile"


class ProfileFormatError(ValueError):
    """A profile file is missing, truncated, corrupt or of an unknown format version."""


def save_profile(profile: PopularityProfile, path: str | Path) -> None:
    """Writes `profile` to one `.npz` file at `path` (format `FORMAT_VERSION`)."""
    specs = profile.tables
    arrays: dict[str, np.ndarray] = {}
    exact = [
        c
        for n in profile.windows
        for c in profile.window_data(n).counters.values()
        if isinstance(c, ExactCounter)
    ]
    encoded = dict(zip(map(id, exact), encode_all(exact), strict=True))
    windows = []
    for j, name in enumerate(profile.windows):
        w = profile.window_data(name)
        offsets, layouts = [], []
        for i, t in enumerate(specs):
            counter = w.counters[t.name]
            if isinstance(counter, ExactCounter):
                layout, parts = encoded[id(counter)]
                for part, a in parts.items():
                    arrays[f"w{j}_{part}_{i}"] = a
                layouts.append(layout)
                offsets.append(0)
            else:
                arrays[f"w{j}_ids_{i}"] = counter.ids
                arrays[f"w{j}_counters_{i}"] = counter.counters
                layouts.append("sketch")
                offsets.append(counter.offset)
        windows.append(
            {
                "name": w.name,
                "sample_rate": w.sample_rate,
                "num_samples": w.num_samples,
                "num_batches": w.num_batches,
                "sampled_samples": w.sampled_samples,
                "totals": [w.counters[t.name].total for t in specs],
                "layouts": layouts,
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
            ids = np.concatenate([r.ids[t.name] for r in runs])
            arrays[f"trace_ids_{i}"] = ids.astype(np.int32) if t.num_embeddings <= 2**31 else ids
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
    write_npz(path, {"meta": np.array(json.dumps(meta)), **arrays})


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez`'s file (an uncompressed zip64 member `NAME.npy` per array, `np.load` reads
    it), each array's bytes written from its own memory: `np.savez` copies every byte twice on
    the way (nditer's buffer, then `tobytes`), a third of a 175 MB profile's save."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for name, array in arrays.items():
            a = array if array.flags.c_contiguous else array.copy(order="C")
            with z.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array_header_1_0(
                    member, np.lib.format.header_data_from_array_1_0(a)
                )
                member.write(a.reshape(-1).view(np.uint8).data)


def load_profile(path: str | Path) -> PopularityProfile:
    """Reads a profile written by `save_profile` (format 1, 2 or 3); raises
    `ProfileFormatError`, one line naming the file and the problem, on a missing, truncated,
    corrupt or foreign file."""
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
            return _load_v2(path, meta, data, version)
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


def _load_v2(path, meta: dict, data, version: int) -> PopularityProfile:
    """Formats 2 and 3 (3: `layouts` per window, narrowed and sparse counts, int32 traces)."""
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
                layout = wm["layouts"][i] if version >= 3 else "dense"
                if version < 3:  # format 2: dense int32/int64 only
                    counts = _array(path, data, f"w{j}_counts_{i}", (spec.num_embeddings,),
                                    (np.int32, np.int64), f"counts of {what}")
                else:
                    counts = np.asarray(data[f"w{j}_counts_{i}"])
                rows = np.asarray(data[f"w{j}_rows_{i}"]) if layout == "sparse" else None
                try:
                    counter = decode_counts(layout, spec.num_embeddings, rows, counts, total)
                except ValueError as e:
                    raise ProfileFormatError(f"{path}: {what}: {e}") from e
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
        ids = _array(
            path, data, f"trace_ids_{i}", None, (np.int32, np.int64), f"trace of {spec.name!r}"
        ).astype(np.int64, copy=False)
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
