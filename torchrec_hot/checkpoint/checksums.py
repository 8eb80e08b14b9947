"""Checksums of a checkpoint's files: DCP records none, so bytes flipped inside tensor data (a
bad disk, a bad copy) would load as wrong weights without a word.

After DCP has written a step, each rank records the CRC-32 and size of the files it wrote
(`__<rank>_*.distcp`; rank 0 also DCP's `.metadata`) in `.checksums_<rank>.json` in the step
directory, fsynced before the step is published. A load checks every data file against them
(each rank a share of the files, round robin: CRC-32 runs at about 2 GB/s here) before DCP reads
any of them. Checkpoints written before checksums (no `.checksums_*.json` at all) load
unchecked. Nothing here is collective; `sharded.py` makes every rank raise the same error.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from torchrec_hot.checkpoint import files

_READ_BYTES = 8 << 20  # bytes per read while checksumming
PREFIX = ".checksums_"


def file_crc32(path: Path) -> int:
    """CRC-32 of the whole file at `path` (read 8 MiB at a time)."""
    crc = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_READ_BYTES):
            crc = zlib.crc32(chunk, crc)
    return crc


def record(step_dir: Path, rank: int) -> Path:
    """Writes `.checksums_<rank>.json`: {file name: {"crc32", "bytes"}} of the files `rank`
    wrote into `step_dir` (rank 0: with `.metadata`), fsynced."""
    names = sorted(p.name for p in step_dir.glob(f"__{rank}_*.distcp"))
    names += [".metadata"] if rank == 0 else []
    sums = {n: {"crc32": file_crc32(step_dir / n), "bytes": (step_dir / n).stat().st_size}
            for n in names}
    path = step_dir / f"{PREFIX}{rank}.json"
    # compact: without whitespace any flipped byte changes a value or breaks the syntax
    files.write_synced(path, json.dumps(sums, separators=(",", ":")))
    return path


def data_files(step_dir: Path) -> list[str]:
    """The files of `step_dir` DCP reads on a load (`.metadata`, `*.distcp`), sorted."""
    return sorted(p.name for p in step_dir.iterdir() if p.suffix == ".distcp"
                  or p.name == ".metadata")


def recorded(step_dir: Path) -> dict[str, dict[str, int]] | None:
    """What the save recorded, all ranks' records merged; None for a checkpoint saved without
    checksums. Raises ValueError naming a record that is not readable."""
    found = sorted(step_dir.glob(f"{PREFIX}*.json"))
    if not found:
        return None
    sums: dict[str, dict[str, int]] = {}
    for path in found:
        try:
            part = json.loads(path.read_text())
            if not isinstance(part, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("crc32"), int)
                and isinstance(v.get("bytes"), int) for v in part.values()
            ):
                raise ValueError("not a {file: {crc32, bytes}} record")
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not readable (corrupt or truncated?): {e}") from e
        sums.update(part)
    return sums


def problems(step_dir: Path, rank: int, world_size: int) -> list[str]:
    """What is wrong with this rank's share of `step_dir`'s data files (every `world_size`-th
    file of `data_files`, from `rank`): a file of no record, a record of no file, a size or a
    CRC-32 that differs from the save's. Never raises: errors (unreadable records or files)
    are returned as text, so that every rank gets to compare notes."""
    try:
        sums = recorded(step_dir)
        if sums is None:
            return []
        names = data_files(step_dir)
        found = [f"{step_dir / n} is missing (the save wrote it)" for n in sorted(sums)
                 if n not in names and rank == 0]
        for name in names[rank::world_size]:
            path, want = step_dir / name, sums.get(name)
            if want is None:
                found.append(f"{path} has no recorded checksum (a checksum record is missing)")
            elif (size := path.stat().st_size) != want["bytes"]:
                found.append(f"{path} is {size} bytes, the save wrote {want['bytes']} "
                             "(truncated?)")
            elif file_crc32(path) != want["crc32"]:
                found.append(f"{path} does not match its CRC-32 (corrupt: bytes changed since "
                             "the save)")
        return found
    except (OSError, ValueError) as e:
        return [str(e)]
