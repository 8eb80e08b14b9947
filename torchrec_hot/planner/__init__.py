"""Hot-row planning: budget allocation, TorchRec constraints and the resulting HotPlan."""

from torchrec_hot.planner.allocation import TableDemand, allocate_hot_rows, served_lookups
from torchrec_hot.planner.cost_model import A100, H100, V100, CostModel, HardwareSpec
from torchrec_hot.planner.hot_plan import HotPlan, PlanFormatError, StockComparison, TablePlan
from torchrec_hot.planner.hot_planner import HotPlanner, PlanDoesNotFitError
from torchrec_hot.planner.memory import make_topology, row_bytes
from torchrec_hot.planner.strategies import Strategy, TableTraffic
from torchrec_hot.planner.strategy_choice import Choice, choose_strategies
from torchrec_hot.planner.strategy_plan import StrategyOptions
from torchrec_hot.planner.strategy_summary import StrategySummary, TableStrategy

__all__ = [
    "A100",
    "H100",
    "V100",
    "Choice",
    "CostModel",
    "HardwareSpec",
    "Strategy",
    "StrategyOptions",
    "StrategySummary",
    "TableStrategy",
    "TableTraffic",
    "choose_strategies",
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
