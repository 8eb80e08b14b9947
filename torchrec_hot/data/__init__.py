"""Input: synthetic Criteo-shaped workloads and readers of real input files, as chunks of ids.

Public names (this one import path each): `criteo_tables`, `zipf_batches`, `workload_batches`,
`window_batches`, `TableKind` (synthetic); `open_source`, `kjt_source` (readers).
"""

# Names load on first use (PEP 562): `import torchrec_hot` alone, or the `profile` command,
# does not import TorchRec (~2 s); each public name is still imported from here.

import importlib

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
_MODULE_OF = {name: module for module, names in _PUBLIC.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> object:
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
        globals()[name] = value
        return value
    try:  # a subpackage, as `import torchrec_hot.data` alone used to make available
        return importlib.import_module(f"torchrec_hot.data.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"torchrec_hot.data.{name}":
            raise
        raise AttributeError(f"module 'torchrec_hot.data' has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
