"""torchrec-hot: profiled hot rows in HBM, cold rows in UVM, planned through TorchRec.

The public surface, stage by stage (each name has this one import path; synthetic inputs and
file readers are in `torchrec_hot.data`):
  profile     PopularityProfile, TableSpec, save_profile / load_profile, merge_profiles,
              all_reduce_profile, ProfileFormatError
  plan        HotShardingPlanner (TorchRec's ShardingPlanner), HotPlanner, HotPlan, TablePlan,
              StrategyOptions, Strategy, make_topology, retarget_sharding_plan,
              ProfileCacheStatistics, HardwareSpec (H100, A100, V100), PlanDoesNotFitError,
              PlanFormatError
  apply       apply_hot_plan, HotColdEmbeddingBagCollection, HotColdEmbeddingCollection,
              hot_cold_modules, Placement
  checkpoint  logical_state_dict / load_logical_state_dict, logical_optimizer_state /
              load_logical_optimizer_state (gathered); save_checkpoint / load_checkpoint /
              latest_checkpoint (sharded DCP, the whole training state), TrainingProgress,
              CheckpointError
  runtime     OnlineCounter, rehot_plan, replan, MigrationReport, make_train_pipeline,
              drain_pipeline, replan_pipelined, uses_cache_prefetch, no_restart_on (torchrun),
              BadBatchError
  report      build_report, format_report
"""

from torchrec_hot.checkpoint.gathered import (
    load_logical_optimizer_state,
    load_logical_state_dict,
    logical_optimizer_state,
    logical_state_dict,
)
from torchrec_hot.checkpoint.sharded import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from torchrec_hot.checkpoint.training_state import TrainingProgress
from torchrec_hot.planner.hot_plan import HotPlan, PlanFormatError, TablePlan
from torchrec_hot.planner.hot_planner import HotPlanner
from torchrec_hot.planner.memory import make_topology
from torchrec_hot.planner.placement import PlanDoesNotFitError
from torchrec_hot.planner.plan_io import retarget_sharding_plan
from torchrec_hot.planner.sharding_planner import HotShardingPlanner
from torchrec_hot.planner.strategy.cache_stats import ProfileCacheStatistics
from torchrec_hot.planner.strategy.cost_model import A100, H100, V100, HardwareSpec
from torchrec_hot.planner.strategy.evaluation import StrategyOptions
from torchrec_hot.planner.strategy.types import Strategy
from torchrec_hot.profiling.distributed import all_reduce_profile
from torchrec_hot.profiling.io import ProfileFormatError, load_profile, save_profile
from torchrec_hot.profiling.merge import merge_profiles
from torchrec_hot.profiling.profile import PopularityProfile
from torchrec_hot.report.rows import build_report
from torchrec_hot.report.text import format_report
from torchrec_hot.runtime.elastic import no_restart_on
from torchrec_hot.runtime.migrate import MigrationReport, replan
from torchrec_hot.runtime.online import OnlineCounter
from torchrec_hot.runtime.pipeline import (
    drain_pipeline,
    make_train_pipeline,
    replan_pipelined,
    uses_cache_prefetch,
)
from torchrec_hot.runtime.rehot import rehot_plan
from torchrec_hot.sharding.agree import BadBatchError
from torchrec_hot.sharding.apply import apply_hot_plan, hot_cold_modules
from torchrec_hot.sharding.hot_cold_ebc import HotColdEmbeddingBagCollection
from torchrec_hot.sharding.hot_cold_ec import HotColdEmbeddingCollection
from torchrec_hot.tables.spec import TableSpec
from torchrec_hot.tables.split import Placement

__all__ = [
    "A100",
    "H100",
    "V100",
    "BadBatchError",
    "CheckpointError",
    "HardwareSpec",
    "HotColdEmbeddingBagCollection",
    "HotColdEmbeddingCollection",
    "HotPlan",
    "HotPlanner",
    "HotShardingPlanner",
    "MigrationReport",
    "OnlineCounter",
    "Placement",
    "PlanDoesNotFitError",
    "PlanFormatError",
    "PopularityProfile",
    "ProfileCacheStatistics",
    "ProfileFormatError",
    "Strategy",
    "StrategyOptions",
    "TablePlan",
    "TableSpec",
    "TrainingProgress",
    "all_reduce_profile",
    "apply_hot_plan",
    "build_report",
    "drain_pipeline",
    "format_report",
    "hot_cold_modules",
    "latest_checkpoint",
    "load_checkpoint",
    "load_logical_optimizer_state",
    "load_logical_state_dict",
    "load_profile",
    "logical_optimizer_state",
    "logical_state_dict",
    "make_topology",
    "make_train_pipeline",
    "merge_profiles",
    "no_restart_on",
    "rehot_plan",
    "replan",
    "replan_pipelined",
    "retarget_sharding_plan",
    "save_checkpoint",
    "save_profile",
    "uses_cache_prefetch",
]
