"""Split the rows of a logical table into its hot and cold rows, and merge them back.

A logical table (N rows) with sorted hot ids `h` (H rows) is held as its hot rows, in hot-slot
order (row j = logical row h[j]), and its cold rows, in compact-cold-index order (row c = the
c-th logical row that is not hot). These helpers convert any (N, ...) tensor (weights,
optimizer state) between the two layouts.
"""

from __future__ import annotations

import torch


def cold_mask(hot_ids: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """(num_embeddings,) bool: True for rows that are not in `hot_ids`."""
    mask = torch.ones(num_embeddings, dtype=torch.bool, device=hot_ids.device)
    mask[hot_ids] = False
    return mask


def split_rows(full: torch.Tensor, hot_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a logical (N, ...) tensor into its hot rows (H, ...) and cold rows (N - H, ...),
    in hot-slot and compact-cold-index order."""
    hot_ids = hot_ids.to(full.device)
    return full[hot_ids], full[cold_mask(hot_ids, full.shape[0])]


def merge_rows(hot: torch.Tensor, cold: torch.Tensor, hot_ids: torch.Tensor) -> torch.Tensor:
    """Inverse of `split_rows`: the logical (H + C, ...) tensor from hot (H, ...) and cold
    (C, ...) rows."""
    n = hot.shape[0] + cold.shape[0]
    hot_ids = hot_ids.to(hot.device)
    out = hot.new_empty((n, *hot.shape[1:]))
    out[hot_ids] = hot
    out[cold_mask(hot_ids, n)] = cold
    return out
