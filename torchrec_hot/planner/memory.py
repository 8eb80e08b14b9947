"""Bytes per embedding row as TorchRec's planner charges them, and topology rebuilding.

TorchRec 1.8 (`shard_estimators._calculate_storage_specific_sizes`) charges a shard
`weight_bytes * (1 + m)` where `weight_bytes = rows * dim * element_size` and the optimizer
multiplier `m` is 0 for no optimizer or SGD, 1/dim for row-wise Adagrad (one fp32 per row),
2 for Adam and 1 for any other optimizer. `row_bytes` mirrors that rule for one row, rounded up
to whole bytes; `tests/test_memory.py` checks it against TorchRec's own estimate.
"""

from __future__ import annotations

import math

import torch
from torchrec import EmbeddingBagConfig
from torchrec.distributed.planner import Topology
from torchrec.distributed.planner.types import (
    HardwareConfig,
    KernelConfig,
    TopologyFactory,
    TrainerConfig,
)
from torchrec.modules.embedding_configs import data_type_to_dtype
from torchrec.optim import SGD as TorchRecSGD
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.optimizers import Adam as TorchRecAdam

GIB = 1024**3


def optimizer_multiplier(optimizer_class: type[torch.optim.Optimizer] | None, dim: int) -> float:
    """Optimizer state bytes per weight byte, as TorchRec's planner charges them."""
    if optimizer_class is None or optimizer_class in (torch.optim.SGD, TorchRecSGD):
        return 0.0
    if optimizer_class in (torch.optim.Adam, TorchRecAdam):
        return 2.0
    if optimizer_class is RowWiseAdagrad:
        return 1.0 / dim
    return 1.0


def row_bytes(
    config: EmbeddingBagConfig, optimizer_class: type[torch.optim.Optimizer] | None
) -> int:
    """HBM bytes one row of `config` costs: weights plus optimizer state."""
    element = torch.empty((), dtype=data_type_to_dtype(config.data_type)).element_size()
    weights = config.embedding_dim * element
    return math.ceil(weights * (1.0 + optimizer_multiplier(optimizer_class, config.embedding_dim)))


def make_topology(
    world_size: int,
    compute_device: str = "cuda",
    hbm_cap: int | None = None,
    ddr_cap: int | None = None,
    local_world_size: int | None = None,
) -> Topology:
    """A TorchRec `Topology` built through `TopologyFactory` (caps in bytes per rank)."""
    return TopologyFactory.create_topology(
        TrainerConfig(
            world_size=world_size,
            local_world_size=local_world_size,
            hbm_cap_bytes=hbm_cap,
            ddr_cap_bytes=ddr_cap,
        ),
        None,
        KernelConfig(compute_device=compute_device),
    )


def topology_with_hbm(topology: Topology, hbm_cap: int) -> Topology:
    """A copy of `topology` whose every device has `hbm_cap` bytes of HBM (bytes per rank)."""
    return TopologyFactory.create_topology(
        TrainerConfig(
            world_size=topology.world_size,
            local_world_size=topology.local_world_size,
            hbm_cap_bytes=hbm_cap,
            ddr_cap_bytes=topology.devices[0].storage.ddr,
        ),
        HardwareConfig(
            hbm_mem_bw=topology.hbm_mem_bw,
            ddr_mem_bw=topology.ddr_mem_bw,
            hbm_to_ddr_mem_bw=topology.hbm_to_ddr_mem_bw,
            intra_host_bw=topology.intra_host_bw,
            inter_host_bw=topology.inter_host_bw,
        ),
        KernelConfig(
            compute_device=topology.compute_device,
            bwd_compute_multiplier=topology.bwd_compute_multiplier,
        ),
    )
