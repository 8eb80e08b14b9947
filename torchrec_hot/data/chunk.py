"""`IdChunk`: the ids of a run of consecutive samples, per feature; what readers yield.

A chunk holds, for each feature, a 1-D tensor of ids (int32 or int64) and optionally per-sample
lengths (`lengths[s]` ids of sample `s`, in sample order); `lengths=None` means exactly one id
per sample (Criteo's sparse columns). Chunks are the unit of validation: a profile checks every
feature of a chunk before it counts any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from torchrec import KeyedJaggedTensor

from torchrec_hot.tables.spec import TableSpec


@dataclass(frozen=True)
class FeatureIds:
    """One feature's ids in a chunk: `values` (1-D int), `lengths` (per sample) or None."""

    values: torch.Tensor
    lengths: torch.Tensor | None = None

    def sample_offsets(self, num_samples: int) -> torch.Tensor:
        """int64 offsets (num_samples + 1,) of each sample's ids in `values`."""
        if self.lengths is None:
            return torch.arange(num_samples + 1, dtype=torch.int64)
        offsets = torch.zeros(num_samples + 1, dtype=torch.int64)
        torch.cumsum(self.lengths.to(torch.int64), 0, out=offsets[1:])
        return offsets


@dataclass(frozen=True)
class IdChunk:
    """`num_samples` consecutive samples: `features[name]` holds that feature's ids."""

    num_samples: int
    features: dict[str, FeatureIds]

    def __post_init__(self) -> None:
        for name, f in self.features.items():
            if f.values.dim() != 1:
                raise ValueError(f"feature {name!r}: ids must be 1-D, got shape {f.values.shape}")
            expected = self.num_samples if f.lengths is None else int(f.lengths.sum())
            if f.lengths is not None and f.lengths.numel() != self.num_samples:
                raise ValueError(
                    f"feature {name!r}: {f.lengths.numel()} lengths for {self.num_samples} samples"
                )
            if f.values.numel() != expected:
                raise ValueError(
                    f"feature {name!r}: {f.values.numel()} ids, lengths say {expected}"
                )

    @property
    def num_ids(self) -> int:
        return sum(int(f.values.numel()) for f in self.features.values())

    @staticmethod
    def from_kjt(kjt: KeyedJaggedTensor) -> IdChunk:
        """One chunk from one KJT (a batch of `kjt.stride()` samples); weights are ignored."""
        keys = kjt.keys()
        if kjt.variable_stride_per_key():
            raise ValueError(
                "KJTs with a variable stride per key (VBE) are not supported: "
                "profile the batch before it is made variable-batch"
            )
        values = kjt.values().to("cpu")
        if values.dtype not in (torch.int32, torch.int64):
            values = values.to(torch.int64)
        lengths = kjt.lengths().to("cpu").view(len(keys), -1) if keys else None
        per_key = values.split(kjt.length_per_key())
        stride = int(kjt.stride())
        return IdChunk(
            stride,
            {
                key: FeatureIds(ids, lengths[i] if lengths is not None else None)
                for i, (key, ids) in enumerate(zip(keys, per_key, strict=True))
            },
        )


def batch_kjts(batch: object) -> list[KeyedJaggedTensor]:
    """The KJTs of one training batch: a KJT; a TorchRec `Batch` (`sparse_features`); a
    TorchRec test `ModelInput` (`idlist_features` and `idscore_features`, the unweighted and
    weighted features of one batch); or a sequence of KJTs of the same samples."""
    from torchrec import KeyedJaggedTensor  # here: file input never imports TorchRec

    if isinstance(batch, KeyedJaggedTensor):
        return [batch]
    if isinstance(batch, list | tuple) and all(isinstance(k, KeyedJaggedTensor) for k in batch):
        return list(batch)
    kjts = [
        getattr(batch, a)
        for a in ("sparse_features", "idlist_features", "idscore_features")
        if isinstance(getattr(batch, a, None), KeyedJaggedTensor)
    ]
    if not kjts:
        raise ValueError(
            "expected a KeyedJaggedTensor, KJTs of one batch, a TorchRec Batch or ModelInput, "
            f"got {type(batch).__name__}"
        )
    return kjts


def chunk_of_batch(batch: object) -> IdChunk:
    """One chunk with the features of every KJT of `batch` (`batch_kjts`); ValueError when the
    KJTs disagree on the number of samples or share a feature."""
    chunks = [IdChunk.from_kjt(k) for k in batch_kjts(batch)]
    if len(chunks) == 1:
        return chunks[0]
    sizes = {c.num_samples for c in chunks}
    if len(sizes) != 1:
        raise ValueError(f"the KJTs of one batch have different batch sizes {sorted(sizes)}")
    features: dict[str, FeatureIds] = {}
    for c in chunks:
        if twice := features.keys() & c.features.keys():
            raise ValueError(f"features {sorted(twice)} are in two KJTs of one batch")
        features.update(c.features)
    return IdChunk(sizes.pop(), features)


class IdOutOfRangeError(ValueError):
    """An id outside its table's rows; names the feature, the table, its rows and the id."""

    def __init__(self, feature: str, table: str, num_rows: int, value: int) -> None:
        super().__init__(
            f"feature {feature!r} (table {table!r}, {num_rows} rows) has id {value}, "
            f"outside [0, {num_rows})"
        )
        self.feature, self.table, self.num_rows, self.value = feature, table, num_rows, value


def check_known_features(chunk: IdChunk, feature_to_table: Mapping[str, str]) -> None:
    """Raises `ValueError` for a feature of the chunk that belongs to no table."""
    unknown = [k for k in chunk.features if k not in feature_to_table]
    if unknown:
        raise ValueError(
            f"features {unknown} belong to no table of the profile "
            f"(known features: {sorted(feature_to_table)})"
        )


def check_feature_ids(feature: str, ids: FeatureIds, table: TableSpec) -> None:
    """Raises `IdOutOfRangeError` when an id of `feature` is outside `table`'s rows (one
    pass: `torch.aminmax`, ~0.6 ns per id; releases the GIL, so features check in parallel)."""
    if ids.values.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(ids.values))
    if low < 0 or high >= table.num_embeddings:
        bad = low if low < 0 else high
        raise IdOutOfRangeError(feature, table.name, table.num_embeddings, bad)


def validate_chunk(
    chunk: IdChunk,
    feature_to_table: Mapping[str, str],
    tables: Mapping[str, TableSpec],
    run: Callable[[dict[str, Callable[[], None]], dict[str, int]], None] | None = None,
) -> None:
    """Raises `ValueError` for a feature of no table, or an id outside its table's rows
    (naming the feature, the table, its rows and the id). `run(jobs, sizes)`, if given, runs
    the per-feature checks (name -> callable, ids per feature), e.g. on threads, and must raise
    the first failing one in the chunk's order; default: one after the other."""
    check_known_features(chunk, feature_to_table)
    jobs = {
        k: partial(check_feature_ids, k, f, tables[feature_to_table[k]])
        for k, f in chunk.features.items()
    }
    if run is None:
        for job in jobs.values():
            job()
    else:
        run(jobs, {k: int(f.values.numel()) for k, f in chunk.features.items()})


def sample_chunk(chunk: IdChunk, rate: float, rng: np.random.Generator) -> IdChunk:
    """The chunk's samples each kept with probability `rate` (all their ids, every feature)."""
    keep_np = rng.random(chunk.num_samples) < rate
    keep = torch.from_numpy(keep_np)
    rows = torch.from_numpy(np.flatnonzero(keep_np))  # index_select beats a bool mask
    features = {}
    for name, f in chunk.features.items():
        if f.lengths is None:
            features[name] = FeatureIds(f.values.index_select(0, rows))
        else:
            mask = np.repeat(keep_np, f.lengths.numpy().astype(np.int64, copy=False))
            features[name] = FeatureIds(f.values[torch.from_numpy(mask)], f.lengths[keep])
    return IdChunk(int(keep_np.sum()), features)


def sum_squares(chunk: IdChunk, feature_to_table: Mapping[str, str]) -> dict[str, int]:
    """Per table, the sum over the chunk's samples of (the table's ids in the sample)^2."""
    per_sample: dict[str, torch.Tensor | int] = {}
    for name, f in chunk.features.items():
        table = feature_to_table[name]
        x = 1 if f.lengths is None else f.lengths.to(torch.int64)
        per_sample[table] = per_sample.get(table, 0) + x
    return {
        t: int(x) ** 2 * chunk.num_samples if isinstance(x, int) else int((x * x).sum())
        for t, x in per_sample.items()
    }
