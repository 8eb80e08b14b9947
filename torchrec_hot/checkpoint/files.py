"""The files of a checkpoint directory: step directories, the `LATEST` pointer, leftovers of
saves that died, retention. Used by rank 0 only; nothing here is collective.

    <dir>/step_<n:08d>/     a complete checkpoint (has `.metadata`)
    <dir>/.step_<n>.tmp/    a save in progress, or one that died before it was published
    <dir>/LATEST            the name of the newest published step directory
    <dir>/LATEST.tmp        a pointer being written, or one a crash left
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Makes the entries of directory `path` (renames, new files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, text: str) -> None:
    """Writes `text` to the file `path` and fsyncs it (its directory entry is the caller's)."""
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def publish(root: Path, name: str) -> None:
    """Points `root/LATEST` at `name`: written to LATEST.tmp, fsynced, renamed into place, and
    the directory fsynced, so a crash or power loss leaves the old or the new pointer."""
    write_synced(root / "LATEST.tmp", name)
    os.replace(root / "LATEST.tmp", root / "LATEST")
    fsync_dir(root)


def published(root: Path, strict: bool = True) -> str | None:
    """The step directory name `root/LATEST` holds, or None. A LATEST that names no directory
    of `root` (damaged) raises `ValueError` when `strict`, else counts as none (a save then
    writes a good one)."""
    pointer = root / "LATEST"
    if not pointer.exists():
        return None
    try:
        name = pointer.read_text().strip()
    except UnicodeDecodeError as e:
        name, error = None, f"{pointer} is not a checkpoint name (corrupt?): {e}"
    else:
        error = f"{pointer} does not name a checkpoint of {root} (corrupt?): {name!r}"
    if name and Path(name).name == name and name not in (".", ".."):
        return name
    if strict:
        raise ValueError(error)
    return None


def replaced(step_dir: Path) -> Path:
    """Where a re-save of a step moves the old step directory while it renames the new one."""
    return step_dir.with_name(f".{step_dir.name}.old.tmp")


def leftovers(root: Path) -> list[Path]:
    """What saves that died left in `root`: temporary step directories, a temporary pointer,
    and step directories without `.metadata` (a retention delete cut short) other than the one
    LATEST names. Complete step directories newer than LATEST (a save that died between its
    rename and its publish) are not leftovers: they are whole, and the next save of that step
    replaces them. Nor is the old copy of the step LATEST names while that step is missing (a
    re-save died between its two renames: `latest_checkpoint` reads the copy)."""
    if not root.is_dir():
        return []
    latest = published(root, strict=False)
    found = sorted(root.glob(".step_*.tmp"))
    if latest is not None and not (root / latest / ".metadata").exists():
        found = [p for p in found if p != replaced(root / latest)]
    found += [p for p in sorted(root.glob("step_*"))
              if p.is_dir() and p.name != latest and not (p / ".metadata").exists()]
    if (root / "LATEST.tmp").exists():
        found.append(root / "LATEST.tmp")
    return found


def remove(paths: list[Path]) -> None:
    """Deletes files and directory trees (missing ones are fine)."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def prune(root: Path, keep: int) -> list[Path]:
    """Deletes all but the newest `keep` complete step directories (`keep=0`: none), never the
    one LATEST names; returns what it deleted."""
    if keep <= 0:
        return []
    latest = published(root, strict=False)
    done = sorted(p for p in root.glob("step_*") if (p / ".metadata").exists())
    old = [p for p in done[:-keep] if p.name != latest]
    remove(old)
    return old
