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

# Names load on first use (`lazy.py`).

from torchrec_hot.lazy import lazy_exports as _lazy_exports

_PUBLIC: dict[str, tuple[str, ...]] = {
    "torchrec_hot.checkpoint.gathered": (
        "load_logical_optimizer_state",
        "load_logical_state_dict",
        "logical_optimizer_state",
        "logical_state_dict",
    ),
    "torchrec_hot.checkpoint.sharded": (
        "CheckpointError",
        "latest_checkpoint",
        "load_checkpoint",
        "save_checkpoint",
    ),
    "torchrec_hot.checkpoint.training_state": ("TrainingProgress",),
    "torchrec_hot.planner.hot_plan": ("HotPlan", "PlanFormatError", "TablePlan"),
    "torchrec_hot.planner.hot_planner": ("HotPlanner",),
    "torchrec_hot.planner.memory": ("make_topology",),
    "torchrec_hot.planner.placement": ("PlanDoesNotFitError",),
    "torchrec_hot.planner.plan_io": ("retarget_sharding_plan",),
    "torchrec_hot.planner.sharding_planner": ("HotShardingPlanner",),
    "torchrec_hot.planner.strategy.cache_stats": ("ProfileCacheStatistics",),
    "torchrec_hot.planner.strategy.cost_model": ("A100", "H100", "V100", "HardwareSpec"),
    "torchrec_hot.planner.strategy.evaluation": ("StrategyOptions",),
    "torchrec_hot.planner.strategy.types": ("Strategy",),
    "torchrec_hot.profiling.distributed": ("all_reduce_profile",),
    "torchrec_hot.profiling.io": ("ProfileFormatError", "load_profile", "save_profile"),
    "torchrec_hot.profiling.merge": ("merge_profiles",),
    "torchrec_hot.profiling.profile": ("PopularityProfile",),
    "torchrec_hot.report.rows": ("build_report",),
    "torchrec_hot.report.text": ("format_report",),
    "torchrec_hot.runtime.elastic": ("no_restart_on",),
    "torchrec_hot.runtime.migrate": ("MigrationReport", "replan"),
    "torchrec_hot.runtime.online": ("OnlineCounter",),
    "torchrec_hot.runtime.pipeline": (
        "drain_pipeline",
        "make_train_pipeline",
        "replan_pipelined",
        "uses_cache_prefetch",
    ),
    "torchrec_hot.runtime.rehot": ("rehot_plan",),
    "torchrec_hot.sharding.agree": ("BadBatchError",),
    "torchrec_hot.sharding.apply": ("apply_hot_plan", "hot_cold_modules"),
    "torchrec_hot.sharding.hot_cold_ebc": ("HotColdEmbeddingBagCollection",),
    "torchrec_hot.sharding.hot_cold_ec": ("HotColdEmbeddingCollection",),
    "torchrec_hot.tables.spec": ("TableSpec",),
    "torchrec_hot.tables.split": ("Placement",),
}
__all__, __getattr__, __dir__ = _lazy_exports(__name__, _PUBLIC, globals())
