"""Public names that load on first use (PEP 562), for `torchrec_hot` and `torchrec_hot.data`:
`import torchrec_hot` alone, or the `profile` command, does not import TorchRec (~2 s), and each
public name still has its one import path from the package."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, public: Mapping[str, tuple[str, ...]], namespace: dict[str, Any]
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """(`__all__`, `__getattr__`, `__dir__`) for `package` whose `public` maps defining module
    -> names; `namespace` is the package's `globals()` (a loaded name is cached there). An
    unknown name that is a subpackage imports it, as a plain `import package` used to."""
    module_of = {name: module for module, names in public.items() for name in names}
    names = sorted(module_of)

    def getattr_(name: str) -> object:
        if name in module_of:
            value = getattr(importlib.import_module(module_of[name]), name)
            namespace[name] = value
            return value
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(names))

    return names, getattr_, dir_
