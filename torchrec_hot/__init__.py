"""torchrec-hot: profiled hot rows in HBM, cold rows in UVM, planned through TorchRec."""

from torchrec_hot.planner import (
    HotPlan,
    HotPlanner,
    PlanDoesNotFitError,
    PlanFormatError,
    TablePlan,
    make_topology,
)
from torchrec_hot.profile import PopularityProfile, ProfileFormatError, TableSpec

__all__ = [
    "HotPlan",
    "HotPlanner",
    "PlanDoesNotFitError",
    "PlanFormatError",
    "PopularityProfile",
    "ProfileFormatError",
    "TablePlan",
    "TableSpec",
    "make_topology",
]
