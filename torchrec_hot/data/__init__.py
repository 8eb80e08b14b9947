"""Input: synthetic Criteo-shaped workloads and readers of real input files, as chunks of ids.

Public names (this one import path each): `criteo_tables`, `zipf_batches`, `workload_batches`,
`window_batches`, `TableKind` (synthetic); `open_source`, `kjt_source` (readers).
"""

from torchrec_hot.data.readers import kjt_source, open_source
from torchrec_hot.data.synthetic import criteo_tables
from torchrec_hot.data.workloads import TableKind, window_batches, workload_batches, zipf_batches

__all__ = [
    "TableKind",
    "criteo_tables",
    "kjt_source",
    "open_source",
    "window_batches",
    "workload_batches",
    "zipf_batches",
]
