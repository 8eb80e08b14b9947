"""Hot-row planning: budget allocation, TorchRec constraints and the resulting HotPlan."""

from torchrec_hot.planner.allocation import TableDemand, allocate_hot_rows, served_lookups
from torchrec_hot.planner.hot_plan import HotPlan, PlanFormatError, StockComparison, TablePlan
from torchrec_hot.planner.hot_planner import HotPlanner, PlanDoesNotFitError
from torchrec_hot.planner.memory import make_topology, row_bytes

__all__ = [
    "HotPlan",
    "HotPlanner",
    "PlanDoesNotFitError",
    "PlanFormatError",
    "StockComparison",
    "TableDemand",
    "TablePlan",
    "allocate_hot_rows",
    "make_topology",
    "row_bytes",
    "served_lookups",
]
