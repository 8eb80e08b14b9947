"""Hot/cold tables as TorchRec sees them: split configs, the hot/cold module, applying a plan,
and checkpoints in the logical layout."""

from torchrec_hot.sharding.apply import apply_hot_plan, check_plan_matches
from torchrec_hot.sharding.checkpoint import (
    load_logical_optimizer_state,
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)
from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection
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
    "HotColdEmbeddingBagCollection",
    "Placement",
    "apply_hot_plan",
    "check_plan_matches",
    "load_logical_optimizer_state",
    "load_logical_state_dict",
    "logical_optimizer_state",
    "logical_state_dict",
    "placement_of",
    "split_module_path",
    "split_table_configs",
]
