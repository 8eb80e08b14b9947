"""Hot/cold tables as TorchRec sees them: split configs and naming."""

from torchrec_hot.sharding.split import (
    COLD_SUFFIX,
    HOT_SUFFIX,
    SPLIT_MODULE_ATTR,
    Placement,
    placement_of,
    split_module_path,
    split_table_configs,
)

__all__ = [
    "COLD_SUFFIX",
    "HOT_SUFFIX",
    "SPLIT_MODULE_ATTR",
    "Placement",
    "placement_of",
    "split_module_path",
    "split_table_configs",
]
