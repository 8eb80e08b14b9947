"""The training state besides the model in a sharded checkpoint: dense optimizers, LR schedulers,
per-rank RNG states, any user `Stateful`, the step and the data position.

Entries of the DCP state dict (nested dicts and lists are flattened here with "/", down to tensors
and other leaves, which DCP stores as pickled objects; DCP's own flattening guesses at load
between its two key formats, for lists of dicts wrongly, whenever the checkpoint holds keys this
rank does not load, such as the other ranks' RNG states):
  `dense_optim/<name>`    a dense optimizer's state, keyed by parameter FQN: a TorchRec
                          `KeyedOptimizer` (e.g. `KeyedOptimizerWrapper`) through its own
                          `state_dict`, any other `torch.optim.Optimizer` through
                          `torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`.
                          Dense parameters are replicated (DDP), so one copy is stored.
  `lr_scheduler/<name>`   `scheduler.state_dict()` (replicated, one copy)
  `rng/rank_<r>`          rank r's torch (and current CUDA device) generator states and its
                          Python `random` and NumPy global states
  `extra/<name>/rank_<r>` `stateful.state_dict()` of rank r (per rank: state that differs
                          between ranks is never merged)
  `meta/step`, `meta/data_position`, `meta/world_size`   int64 scalars
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.checkpoint.stateful import Stateful
from torch.optim.lr_scheduler import LRScheduler
from torchrec.optim.keyed import KeyedOptimizer


@dataclass(frozen=True)
class TrainingProgress:
    """What `load_checkpoint` restored: the step, the data position (batches, or whatever unit
    the saver used; the step when the saver gave none), the world size that wrote the
    checkpoint, and whether this rank got its own RNG state back (False when the checkpoint has
    none for this rank: written by fewer ranks, or without RNG states)."""

    step: int
    data_position: int
    saved_world_size: int
    rng_restored: bool


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module under DistributedModelParallel / DDP, whose parameter names are the FQNs."""
    return getattr(model, "module", model)


def _init_lazy_state(optimizer: torch.optim.Optimizer) -> None:
    """Creates an optimizer's lazily made state (Adam moments, ...) by one step with zero
    gradients and lr 0, so that DCP has tensors to load into; parameters are left unchanged
    (also with weight decay: lr 0 scales every update to zero)."""
    if optimizer.state:
        return
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    lrs = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    for p in params:
        p.grad = None


def _with_param_groups(optimizer: KeyedOptimizer, call: Callable[[], Any]) -> Any:
    """`call()` with the KeyedOptimizer's param groups (lr, ...) saved and loaded too (TorchRec
    leaves them out by default, and a resumed LR schedule needs them)."""
    before = bool(optimizer.defaults.get("_save_param_groups", False))
    optimizer.save_param_groups(True)
    try:
        return call()
    finally:
        optimizer.save_param_groups(before)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                    for_load: bool) -> dict[str, Any]:
    """`optimizer`'s state and param groups keyed by parameter FQN (for a load: initialised
    first, to load into)."""
    if for_load:
        _init_lazy_state(optimizer)
    if isinstance(optimizer, KeyedOptimizer):
        return _with_param_groups(optimizer, optimizer.state_dict)
    return get_optimizer_state_dict(_unwrapped(model), optimizer)  # type: ignore[return-value]


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                         state: dict[str, Any]) -> None:
    """Puts the state `optimizer_state` returned (and DCP filled) into `optimizer`."""
    if isinstance(optimizer, KeyedOptimizer):
        _with_param_groups(optimizer, lambda: optimizer.load_state_dict(state))
    else:
        set_optimizer_state_dict(_unwrapped(model), optimizer, state)  # type: ignore[arg-type]


def rng_state() -> dict[str, Any]:
    """This process's random generators: torch CPU (and the current CUDA device's), Python's
    `random` and NumPy's global state."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restores what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def training_entries(model: nn.Module, rank: int,
                     optimizers: Mapping[str, torch.optim.Optimizer],
                     lr_schedulers: Mapping[str, LRScheduler],
                     extra: Mapping[str, Stateful], rng: bool,
                     for_load: bool, extra_rank: int | None = None,
                     rng_present: bool = True) -> dict[str, Any]:
    """The DCP entries (see the module docstring) for this rank, current values; `for_load`
    initialises lazy optimizer state first. `extra_rank`: whose copy of `extra` to read (this
    rank by default); `rng_present=False` leaves the RNG entry out."""
    entries: dict[str, Any] = {}
    for name, optimizer in optimizers.items():
        entries[f"dense_optim/{name}"] = optimizer_state(model, optimizer, for_load)
    for name, scheduler in lr_schedulers.items():
        entries[f"lr_scheduler/{name}"] = scheduler.state_dict()
    if rng and rng_present:
        entries[f"rng/rank_{rank}"] = rng_state()
    for name, stateful in extra.items():
        entries[f"extra/{name}/rank_{rank if extra_rank is None else extra_rank}"] = \
            stateful.state_dict()
    return entries


# Empty dicts and lists are stored as these strings (DCP would drop them: nothing to flatten).
_EMPTY = {dict: "<empty dict>", list: "<empty list>"}


def flatten_entries(entries: Mapping[str, Any]) -> dict[str, Any]:
    """`{"a": {"b": t, "c": [x], "d": {}}}` -> `{"a/b": t, "a/c/0": x, "a/d": "<empty dict>"}`:
    nested dicts and lists down to their leaves."""
    flat: dict[str, Any] = {}

    def visit(key: str, value: Any) -> None:
        if isinstance(value, list) and value:
            for i, v in enumerate(value):
                visit(f"{key}/{i}", v)
        elif isinstance(value, Mapping) and value:
            for k, v in value.items():
                visit(f"{key}/{k}", v)
        elif isinstance(value, (Mapping, list)):
            flat[key] = _EMPTY[list if isinstance(value, list) else dict]
        else:
            flat[key] = value

    for key, value in entries.items():
        visit(key, value)
    return flat


def rebuild_entries(template: Mapping[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested entries of `template` with their leaves taken from `flat` (loaded by DCP)."""
    def build(key: str, value: Any) -> Any:
        if isinstance(value, list) and value:
            return [build(f"{key}/{i}", v) for i, v in enumerate(value)]
        if isinstance(value, Mapping) and value:
            return {k: build(f"{key}/{k}", v) for k, v in value.items()}
        loaded = flat[key]
        if isinstance(loaded, str) and loaded in (_EMPTY[dict], _EMPTY[list]):
            return {} if loaded == _EMPTY[dict] else []
        return loaded

    return {key: build(key, value) for key, value in template.items()}


def apply_training_entries(model: nn.Module, entries: Mapping[str, Any], rank: int,
                           optimizers: Mapping[str, torch.optim.Optimizer],
                           lr_schedulers: Mapping[str, LRScheduler],
                           extra: Mapping[str, Stateful], extra_rank: int) -> bool:
    """Puts loaded entries back into the objects; returns whether this rank's RNG was set."""
    for name, optimizer in optimizers.items():
        load_optimizer_state(model, optimizer, entries[f"dense_optim/{name}"])
    for name, scheduler in lr_schedulers.items():
        scheduler.load_state_dict(entries[f"lr_scheduler/{name}"])
    for name, stateful in extra.items():
        stateful.load_state_dict(entries[f"extra/{name}/rank_{extra_rank}"])
    rng = entries.get(f"rng/rank_{rank}")
    if rng is not None:
        set_rng_state(rng)
    return rng is not None
