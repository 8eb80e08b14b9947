"""torchrec-hot: profiled hot rows in HBM, cold rows in UVM, planned through TorchRec."""

from torchrec_hot.planner import (
    HotPlan,
    HotPlanner,
    PlanDoesNotFitError,
    PlanFormatError,
    Strategy,
    StrategyOptions,
    TablePlan,
    make_topology,
)
from torchrec_hot.profile import PopularityProfile, ProfileFormatError, TableSpec
from torchrec_hot.sharding import (
    HotColdEmbeddingBagCollection,
    apply_hot_plan,
    load_logical_optimizer_state,
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)

__all__ = [
    "HotColdEmbeddingBagCollection",
    "HotPlan",
    "HotPlanner",
    "PlanDoesNotFitError",
    "PlanFormatError",
    "PopularityProfile",
    "ProfileFormatError",
    "Strategy",
    "StrategyOptions",
    "TablePlan",
    "TableSpec",
    "apply_hot_plan",
    "load_logical_optimizer_state",
    "load_logical_state_dict",
    "logical_optimizer_state",
    "logical_state_dict",
    "make_topology",
]
