"""TorchRec's sparse-dist train pipelines for models with hot/cold modules.

`make_train_pipeline` builds TorchRec's `TrainPipelineSparseDist`, or, on CUDA when a table of the
model's plan is `fused_uvm_caching` with `cache_params.prefetch_pipeline=True`,
`PrefetchTrainPipelineSparseDist` (that cache is then filled a batch ahead). Both get
`pipeline_postproc=True`: the pipeline traces the model, finds that the inner split EBC
(`split_ebc`, a ShardedModule) is fed by the hot/cold module's id remap (`remap`, a
`KJTRemapper` without parameters), and runs the remap, with its id validation, as a pipelined
postproc in the input-dist stage of the next batch. The split EBC's input dist then overlaps the
current batch's forward and backward exactly as a stock EBC's does; without `pipeline_postproc`
TorchRec would see a modified input and leave the split EBC unpipelined. The remap is a pure
function of the ids and the hot ids, so training is the same as without the pipeline (bit for
bit: tests/test_train_pipeline.py). An out-of-range id is reported one step earlier (when its
batch enters the input dist) and still before any lookup.

Re-planning (`migrate.replan`) changes the hot ids while the next batch has already been
remapped and distributed with the old ones: `drain_pipeline` detaches the pipeline (restoring
the model's modules) and hands back the batches it had taken in but not trained on, to feed to a
new pipeline after the replan; `replan_pipelined` does the three steps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.train_pipeline import (
    PrefetchTrainPipelineSparseDist,
    TrainPipelineSparseDist,
)
from torchrec.distributed.types import ParameterSharding, ShardingPlan

from torchrec_hot.planner.hot_plan import HotPlan
from torchrec_hot.runtime.migrate import MigrationReport, replan


def uses_cache_prefetch(plan: ShardingPlan) -> bool:
    """Whether a table of `plan` is `fused_uvm_caching` with `cache_params.prefetch_pipeline`."""
    for module_plan in plan.plan.values():
        if not isinstance(module_plan, dict):
            continue
        for sharding in module_plan.values():
            if not isinstance(sharding, ParameterSharding):
                continue
            cache = sharding.cache_params
            if (
                sharding.compute_kernel == EmbeddingComputeKernel.FUSED_UVM_CACHING.value
                and cache is not None
                and cache.prefetch_pipeline
            ):
                return True
    return False


def make_train_pipeline(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    plan: ShardingPlan | None = None,
) -> TrainPipelineSparseDist:
    """The train pipeline for DMP `model` (see module docstring); `plan`: the model's sharding
    plan (default: `model.plan`). Each `progress(batches)` trains one batch: zero_grad, forward,
    backward, `optimizer.step()`, with the next batch's input dist in flight."""
    plan = plan if plan is not None else model.plan  # type: ignore[assignment]
    if device.type == "cuda" and uses_cache_prefetch(plan):  # type: ignore[arg-type]
        return PrefetchTrainPipelineSparseDist(model, optimizer, device, pipeline_postproc=True)
    return TrainPipelineSparseDist(model, optimizer, device, pipeline_postproc=True)


def drain_pipeline(pipeline: TrainPipelineSparseDist) -> list[Any]:
    """Detaches `pipeline` from its model (whose modules get their own forwards back) and returns
    the batches it had taken in but not trained on, oldest first, to feed to a new pipeline.
    Their input dists, already started, are waited on and dropped."""
    for context in pipeline.contexts:
        for _, awaitable in context.fused_splits_awaitables:
            awaitable.wait()
        for request in context.input_dist_tensors_requests.values():
            request.wait()
    pending = [batch for batch in pipeline.batches if batch is not None]
    pipeline.detach()
    return pending


def replan_pipelined(
    pipeline: TrainPipelineSparseDist,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    hot_plan: HotPlan,
    data: Iterable[Any],
    plan: ShardingPlan | None = None,
) -> tuple[TrainPipelineSparseDist, Iterator[Any], MigrationReport]:
    """Re-plans DMP `model` to `hot_plan` while it trains through `pipeline`: drains it, moves
    rows and optimizer state (`migrate.replan`), and returns a new pipeline, the batches to
    feed it (those the old one had taken in, then the rest of `data`) and the replan report."""
    pending = drain_pipeline(pipeline)
    report = replan(model, hot_plan)
    return (
        make_train_pipeline(model, optimizer, device, plan),
        itertools.chain(pending, data),
        report,
    )
