"""Where each logical row of each embedding table lives, and moving rows between ranks.

A logical table `T` (N rows) of a DMP model is held by one or two inner tables ("parts"): the
stock table itself (rows 0..N-1 in order), or `T__hot` (row j = logical row hot_ids[j]) and
`T__cold` (row c = the c-th logical row that is not hot). Each part is sharded by TorchRec into
rectangular shards (row range x column range) on ranks.

`to_row_blocks` moves rows from wherever the parts keep them into a plan-independent layout:
rank r holds the contiguous logical rows [r * B, (r + 1) * B), B = ceil(N / world).
`from_row_blocks` is the inverse. Both are collectives (every rank calls them for every table,
in the same order) built on `all_to_all_single`; no rank ever holds a whole table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Piece:
    """A rectangle of a logical table held by this rank: `values` (len(ids), width) are the
    columns [col0, col0 + width) of logical rows `ids` (int64, any order)."""

    ids: torch.Tensor
    col0: int
    values: torch.Tensor


def block_range(num_rows: int, world: int, rank: int) -> tuple[int, int]:
    """Logical rows [start, end) of `rank`'s block."""
    size = math.ceil(num_rows / world) if num_rows else 0
    start = min(num_rows, rank * size)
    return start, min(num_rows, start + size)


def _exchange(per_dest: list[torch.Tensor]) -> list[torch.Tensor]:
    """Sends per_dest[d] (1-D) to rank d; returns what each rank sent here, by source."""
    world = dist.get_world_size()
    send_counts = torch.tensor([t.numel() for t in per_dest], dtype=torch.int64)
    recv_counts = torch.empty(world, dtype=torch.int64)
    dist.all_to_all_single(recv_counts, send_counts)
    dtype = per_dest[0].dtype
    out = torch.empty(int(recv_counts.sum()), dtype=dtype)
    inp = torch.cat(per_dest) if per_dest else torch.empty(0, dtype=dtype)
    dist.all_to_all_single(out, inp, recv_counts.tolist(), send_counts.tolist())
    return list(out.split(recv_counts.tolist()))


def _owner(ids: torch.Tensor, num_rows: int, world: int) -> torch.Tensor:
    size = max(1, math.ceil(num_rows / world))
    return torch.div(ids, size, rounding_mode="floor")


def to_row_blocks(
    pieces: list[Piece], num_rows: int, width: int, dtype: torch.dtype
) -> torch.Tensor:
    """This rank's block (end - start, width) of the logical table assembled from every rank's
    pieces. Every cell of the table must be in exactly one piece on some rank."""
    world, rank = dist.get_world_size(), dist.get_rank()
    header: list[list[torch.Tensor]] = [[] for _ in range(world)]
    values: list[list[torch.Tensor]] = [[] for _ in range(world)]
    for p in pieces:
        owner = _owner(p.ids, num_rows, world)
        w = p.values.shape[1]
        for d in range(world):
            mask = owner == d
            if not bool(mask.any()):
                continue
            ids = p.ids[mask]
            meta = torch.stack([ids, torch.full_like(ids, p.col0), torch.full_like(ids, w)], 1)
            header[d].append(meta.reshape(-1))
            values[d].append(p.values[mask].to(dtype).reshape(-1))
    empty_i, empty_v = torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=dtype)
    got_meta = _exchange([torch.cat(h) if h else empty_i for h in header])
    got_vals = _exchange([torch.cat(v) if v else empty_v for v in values])
    start, end = block_range(num_rows, world, rank)
    block = torch.zeros(end - start, width, dtype=dtype)
    for meta, vals in zip(got_meta, got_vals, strict=True):
        meta = meta.view(-1, 3)
        runs, counts = torch.unique_consecutive(meta[:, 1:], dim=0, return_counts=True)
        row, offset = 0, 0  # rows arrive in runs of one piece: constant col0 and width
        for (col0, w), n in zip(runs.tolist(), counts.tolist(), strict=True):
            rows = meta[row : row + n, 0] - start
            block[rows, col0 : col0 + w] = vals[offset : offset + n * w].view(n, w)
            row, offset = row + n, offset + n * w
    return block


def from_row_blocks(
    block: torch.Tensor, num_rows: int, wanted: list[torch.Tensor]
) -> list[torch.Tensor]:
    """For each int64 id tensor in `wanted`, the full-width rows (len, width) of the logical
    table, fetched from the ranks whose blocks hold them (`block`: this rank's block)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    width = block.shape[1]
    ids = torch.cat(wanted) if wanted else torch.empty(0, dtype=torch.int64)
    owner = _owner(ids, num_rows, world)
    order = torch.argsort(owner, stable=True)
    per_dest = [ids[order][owner[order] == d] for d in range(world)]
    requests = _exchange(per_dest)
    start, _ = block_range(num_rows, world, rank)
    got = _exchange([block[r - start].reshape(-1) for r in requests])
    rows = torch.cat([g.view(-1, width) for g in got]) if got else block.new_empty(0, width)
    out = torch.empty_like(rows)
    out[order] = rows
    return list(out.split([w.numel() for w in wanted]))

