"""The public surface: every name the README and examples use comes from `torchrec_hot` (or
`torchrec_hot.data`), one import path each; subpackages re-export nothing."""

import ast
import importlib
import pkgutil
import re
import types
from pathlib import Path

import torchrec_hot
import torchrec_hot.data

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {"torchrec_hot", "torchrec_hot.data"}


def _imports(source: str) -> list[tuple[str, str]]:
    """(module, name) of every `from torchrec_hot... import name` in `source`."""
    return [
        (node.module, alias.name)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchrec_hot")
        for alias in node.names
    ]


def test_all_public_names_resolve():
    for package in (torchrec_hot, torchrec_hot.data):
        for name in package.__all__:
            assert getattr(package, name) is not None, name
    assert not set(torchrec_hot.__all__) & set(torchrec_hot.data.__all__)


def test_examples_and_readme_use_the_public_surface():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    sources = {f"README block {i}": b for i, b in enumerate(blocks)}
    sources.update({str(p): p.read_text() for p in (ROOT / "examples").glob("*.py")})
    used = {(where, m, n) for where, src in sources.items() for m, n in _imports(src)}
    assert used, "no torchrec_hot import found: the check would pass vacuously"
    assert [u for u in used if u[1] not in PUBLIC] == []
    for _, module, name in used:
        assert name in importlib.import_module(module).__all__, (module, name)


def test_subpackages_reexport_nothing():
    for info in pkgutil.walk_packages(torchrec_hot.__path__, "torchrec_hot."):
        if not info.ispkg or info.name in PUBLIC:
            continue
        package = importlib.import_module(info.name)
        exported = [
            n for n, v in vars(package).items()
            if not n.startswith("_") and not isinstance(v, types.ModuleType)
        ]
        assert exported == [], (info.name, exported)
