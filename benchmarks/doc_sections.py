"""Each benchmark owns one marked section of docs/BENCHMARKS.md and rewrites only that.

A section is the text between `<!-- name:start -->` and `<!-- name:end -->`; when the markers
are not there yet the section is appended at the end of the file.
"""

from __future__ import annotations

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
