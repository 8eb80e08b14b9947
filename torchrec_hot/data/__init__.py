"""Input: synthetic Criteo-shaped workloads and readers of real input files, as chunks of ids.

Public names (this one import path each): `criteo_tables`, `zipf_batches`, `workload_batches`,
`window_batches`, `TableKind` (synthetic); `open_source`, `kjt_source` (readers).
"""

# Names load on first use (`lazy.py`).

from torchrec_hot.lazy import lazy_exports as _lazy_exports

_PUBLIC: dict[str, tuple[str, ...]] = {
    "torchrec_hot.data.readers": ("kjt_source", "open_source"),
    "torchrec_hot.data.synthetic": ("criteo_tables",),
    "torchrec_hot.data.workloads": (
        "TableKind",
        "window_batches",
        "workload_batches",
        "zipf_batches",
    ),
}
__all__, __getattr__, __dir__ = _lazy_exports(__name__, _PUBLIC, globals())
