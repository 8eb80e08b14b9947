"""Bad input on one rank stops every rank, with its message.

Under DistributedModelParallel every rank enters TorchRec's input all-to-all with its batch. A
rank whose batch holds a bad id raises before it (the id check of the hot/cold module), and
without word from it the others would wait in the all-to-all until the process group's timeout.
`raise_on_any_rank` is the word: one all-reduce of a flag per batch (every rank calls it, with
its own error or None); when any rank failed, every rank raises the same `BadBatchError` naming
the failing ranks and their messages.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class BadBatchError(ValueError):
    """A batch held bad input on at least one rank; raised on every rank with the same message.
    Deterministic: the same batch fails again on a retry (see `runtime.elastic`)."""


def raise_on_any_rank(
    error: str | None, group: dist.ProcessGroup | None = None, device: torch.device | None = None
) -> None:
    """Collective: returns when no rank of `group` reports an error, else raises on every rank.
    `device`: where the flag lives (the batch's device; NCCL needs a CUDA tensor)."""
    flag = torch.tensor([0 if error is None else 1], dtype=torch.int32, device=device)
    dist.all_reduce(flag, group=group)
    if int(flag.item()) == 0:
        return
    messages: list[str | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(messages, error, group=group)
    failed = "; ".join(f"rank {r}: {m}" for r, m in enumerate(messages) if m is not None)
    raise BadBatchError(f"bad input on {sum(m is not None for m in messages)} rank(s): {failed}")
