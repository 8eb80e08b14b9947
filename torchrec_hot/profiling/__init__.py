"""Popularity profiling: exact or sketched per-row counts per window, sampling, traces, files,
merging across jobs and ranks."""

from torchrec_hot.profiling.chunk import FeatureIds, IdChunk
from torchrec_hot.profiling.counters import ExactCounter, HeavyHitterSketch
from torchrec_hot.profiling.io import FORMAT_VERSION
from torchrec_hot.profiling.profile import DEFAULT_WINDOW, PopularityProfile, Window
from torchrec_hot.profiling.spec import ProfileFormatError, TableSpec, table_differences
from torchrec_hot.profiling.stats import HotShare
from torchrec_hot.profiling.trace import IdTrace, TraceRun

__all__ = [
    "DEFAULT_WINDOW",
    "FORMAT_VERSION",
    "ExactCounter",
    "FeatureIds",
    "HeavyHitterSketch",
    "HotShare",
    "IdChunk",
    "IdTrace",
    "PopularityProfile",
    "ProfileFormatError",
    "TableSpec",
    "TraceRun",
    "Window",
    "table_differences",
]
