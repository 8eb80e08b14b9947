"""Each benchmark owns one marked section of docs/BENCHMARKS.md and rewrites only that.

A section is the text between `<!-- name:start -->` and `<!-- name:end -->`; when the markers
are not there yet the section is appended at the end of the file.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"


def write_section(name: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Replaces (or appends) section `name` of `path` with `text` (markdown)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in doc and end in doc:
        head, rest = doc.split(start, 1)
        _, tail = rest.split(end, 1)
        doc = head + block + tail
    else:
        doc = doc.rstrip() + "\n\n" + block + "\n"
    path.write_text(doc)


def machine() -> str:
    """The machine in one line: CPU model, cores, memory, GPU, torch and Python versions."""
    import torch

    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if "model name" in ln), "?")
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}, torch {torch.__version__}, "
            f"Python {platform.python_version()}")  # fmt: skip
