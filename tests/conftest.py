"""Shared test set-up: quiet TorchRec's planner logs; skip `gpu` tests where CUDA is absent."""

import logging

import pytest
import torch

logging.getLogger("torchrec").setLevel(logging.ERROR)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
