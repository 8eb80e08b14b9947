"""Per-table strategy planning: traces -> traffic curves -> choice -> table plans and a summary.

`StrategyEvaluation` is built once per `HotPlanner.plan` call when the planner was given
`StrategyOptions`:
  1. per table, the held-out global batches (`StrategyOptions.holdout`'s trace, else the
     profile's own trace; at most `max_batches`, cut to `world_size x batch_size` samples);
  2. `strategy_sim.evaluate_table` on a grid of HBM sizes per table: 0, a geometric series up
     to the rows the whole budget could hold, and the hot rows the static allocation
     (`allocate_hot_rows`) gives at the full and the half budget, so the choice can always
     reproduce the plain static plan;
  3. `strategy_choice.choose_strategies` under a total budget (the planner shrinks it when a
     rank overflows) -> one `TablePlan` per table:
       STATIC k rows   -> hot/cold split with k hot rows (whole HBM / UVM at k = N / 0),
       LRU/LFU cache   -> whole table in UVM behind a cache of `hbm_rows` slots,
       LOOK_FORWARD    -> the same with `prefetch=True` (LRU, TorchRec's prefetch pipeline),
       STATIC_LOOK_FORWARD -> split, the cold half behind a prefetched cache,
       ALL_HBM / ALL_UVM -> whole table in HBM / UVM;
  4. a `StrategySummary` for the report: per table the choice and runner-up with modeled ms,
     and the whole model's modeled embedding ms for ours, stock TorchRec's plan (its kernels
     mapped to strategies: fused -> all HBM, fused_uvm -> all UVM, fused_uvm_caching -> the
     simulated cache at its load factor), all static (FAE), all LRU cache, all look-forward and
     all HBM (budget ignored: the limit).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchrec import EmbeddingBagConfig
from torchrec.distributed.types import ShardingPlan
from tqdm import tqdm

from torchrec_hot.planner.expected import HeldOutShares
from torchrec_hot.planner.hot_plan import TablePlan
from torchrec_hot.planner.plan_io import parameter_shardings
from torchrec_hot.planner.stock import hbm_fraction
from torchrec_hot.planner.strategy.choice import Choice, choose_strategies
from torchrec_hot.planner.strategy.cost_model import (
    H100,
    CostModel,
    HardwareSpec,
    TableCostSpec,
)
from torchrec_hot.planner.strategy.machinery import CacheMachinery
from torchrec_hot.planner.strategy.realise import realised_table_plan
from torchrec_hot.planner.strategy.simulate import default_warmup, evaluate_table, holdout_batches
from torchrec_hot.planner.strategy.summary import StrategySummary, TableStrategy
from torchrec_hot.planner.strategy.types import Strategy, TableTraffic
from torchrec_hot.planner.table_plans import table_plan_from_counts
from torchrec_hot.profiling.profile import PopularityProfile
from torchrec_hot.tables.allocation import TableDemand, allocate_hot_rows

# the summary's name of TorchRec's embedding offloading plan (`stock.compare_with_tuned_stock`)
TUNED_STOCK = "stock TorchRec, embedding offloading"
# single-strategy plans the summary compares with: name -> strategies allowed
ALTERNATIVES: dict[str, tuple[Strategy, ...]] = {
    "all static (FAE)": (Strategy.STATIC,),
    "all lru cache": (Strategy.LRU_CACHE, Strategy.ALL_HBM, Strategy.ALL_UVM),
    "all look-forward": (Strategy.LOOK_FORWARD, Strategy.ALL_HBM, Strategy.ALL_UVM),
}


@dataclass(frozen=True)
class StrategyOptions:
    """How `HotPlanner` chooses strategies per table.

    Attributes:
        hardware: bandwidths of one rank for the cost model (`cost_model.H100`, `A100`, ...).
        look_ahead: batches of look-ahead of look-forward caches (1: TorchRec's prefetch).
        holdout: a profile of held-out input whose trace the strategies are measured on
            (None: the planned profile's own trace).
        strategies: the strategies a table may get (ALL_HBM and ALL_UVM are always allowed).
        sizes_per_table: HBM sizes simulated per table (the geometric part of the grid).
        max_batches: most held-out global batches simulated per table.
        dense_ms: dense compute per step and rank, widening the window that hides prefetches.
        machinery: GPU time of FBGEMM's cache kernels (None: `machinery.CacheMachinery()`,
            estimated defaults; `NO_MACHINERY`: bytes only).
    """

    hardware: HardwareSpec = H100
    look_ahead: int = 1
    holdout: PopularityProfile | None = None
    strategies: tuple[Strategy, ...] = tuple(Strategy)
    sizes_per_table: int = 7
    max_batches: int = 16
    dense_ms: float = 0.0
    machinery: CacheMachinery | None = None


class StrategyEvaluation:
    """Traffic curves of every table on held-out batches, and choices under a budget.

    Args (keyword-only):
        configs: the logical tables.
        counts: table name -> profiled lookups per row (int64, (num_embeddings,)).
        demands: the tables' `TableDemand`s from those counts (as HotPlanner built them).
        profile: the planned profile (its trace is the fallback hold-out).
        options: see `StrategyOptions`.
        world_size: ranks.
        local_world_size: ranks per host (the all-to-all crosses hosts beyond it; None: all
            ranks on one host).
        batch_size: samples per rank per step (a global batch is world_size x batch_size).
        optimizer_class: the fused optimizer (its state is charged per row; None: none).
        total_budget_bytes: HBM bytes for rows and caches, all ranks together (the top of the
            grid of sizes, and the budget of the static allocation it includes).
        shares: out-of-sample shares of static hot rows for the summary (`hbm_share`; None:
            the simulated hit rates on the held-out batches as they are).
    """

    def __init__(
        self,
        *,
        configs: Sequence[EmbeddingBagConfig],
        counts: Mapping[str, np.ndarray],
        demands: Sequence[TableDemand],
        profile: PopularityProfile,
        options: StrategyOptions,
        world_size: int,
        local_world_size: int | None = None,
        batch_size: int,
        optimizer_class: type[torch.optim.Optimizer] | None,
        total_budget_bytes: int,
        shares: HeldOutShares | None = None,
    ) -> None:
        self.configs = list(configs)
        self.shares = shares
        self.global_batch = world_size * batch_size
        self._static_hit: dict[tuple[str, int], float] = {}
        self.counts = counts
        self.options = options
        source = options.holdout if options.holdout is not None else profile
        self.source = source  # the profile whose trace the strategies are measured on
        self.evaluated_on = "hold-out trace" if options.holdout is not None else "profile trace"
        if options.holdout is not None:
            options.holdout.check_matches(self.configs, check_dims=False)
        specs = {c.name: TableCostSpec.from_config(c, optimizer_class) for c in self.configs}
        self.row_bytes = {name: s.row_bytes for name, s in specs.items()}
        self.cost_model = CostModel(
            options.hardware, world_size, specs, batch_size,
            local_world_size=local_world_size, dense_ms=options.dense_ms,
            machinery=options.machinery,
        )  # fmt: skip
        global_batch = world_size * batch_size
        self.batches: dict[str, list[np.ndarray]] = {}
        for c in self.configs:
            batches = holdout_batches(source, c.name, global_batch)[: options.max_batches]
            if not batches:
                raise ValueError(
                    f"no held-out batches of table {c.name!r} to evaluate strategies on: the "
                    f"{self.evaluated_on} is empty (profile with trace_max_ids > 0, at least "
                    f"{global_batch} samples per run, or pass StrategyOptions(holdout=...))"
                )
            self.batches[c.name] = batches
        allowed = set(options.strategies) | {Strategy.ALL_HBM, Strategy.ALL_UVM}
        self.curves: dict[str, dict[Strategy, list[TableTraffic]]] = {}
        self._choices: dict[tuple[int, tuple[Strategy, ...] | None], Choice] = {}
        self._plain: dict[tuple[str, int], TablePlan] = {}
        self._stock_cache: dict[int, tuple[ShardingPlan, list[TableTraffic]]] = {}
        static = [
            allocate_hot_rows(demands, int(share * total_budget_bytes)) for share in (1.0, 0.5)
        ]
        tables = tqdm(self.configs, desc="simulating strategies", unit="table", leave=False,
                      disable=None, file=sys.stderr)  # shown on a terminal only
        for c in tables:
            sizes = self._sizes(c, total_budget_bytes, [s[c.name] for s in static])
            curves = evaluate_table(
                c.name, counts[c.name], self.batches[c.name], sizes, look_ahead=options.look_ahead
            )
            self.curves[c.name] = {s: v for s, v in curves.items() if s in allowed}

    def _sizes(
        self, config: EmbeddingBagConfig, total_budget_bytes: int, static_rows: Sequence[int]
    ) -> list[int]:
        """HBM sizes (rows, all ranks) to simulate for one table (module docstring);
        `static_rows`: the table's hot rows under the static allocation at some budgets."""
        rows = config.num_embeddings
        top = min(rows, total_budget_bytes // self.row_bytes[config.name])
        sizes = {0, *static_rows}
        if top >= 1:
            low = min(top, max(32, rows // 10_000))
            n = self.options.sizes_per_table
            sizes |= {int(round(x)) for x in np.geomspace(low, top, n)}
        return sorted(s for s in sizes if 0 <= s <= rows)

    def choose(
        self, total_bytes: int, strategies: Sequence[Strategy] | None = None
    ) -> Choice:
        """The best option per table within `total_bytes` (only `strategies`, when given)."""
        key = (max(0, total_bytes), tuple(strategies) if strategies is not None else None)
        if key not in self._choices:
            curves = self.curves
            if strategies is not None:
                keep = set(strategies)
                curves = {
                    t: {s: v for s, v in by.items() if s in keep} for t, by in self.curves.items()
                }
            self._choices[key] = choose_strategies(
                curves, self.row_bytes, key[0], self.cost_model
            )
        return self._choices[key]

    def choose_best(self, total_bytes: int) -> Choice:
        """`choose` over all allowed strategies, or a single-strategy plan where the search
        (a heuristic, see `strategy_choice`) found one better: never worse than any of them.
        Among choices of the same modeled time (relative 1e-12), the one that moves the
        fewest bytes over the host link (critical and background)."""
        candidates = [self.choose(total_bytes)] + [
            self.choose(total_bytes, allowed) for allowed in self._alternatives().values()
        ]
        fastest = min(c.embedding_ms for c in candidates)
        tied = [c for c in candidates if c.embedding_ms <= fastest * (1 + 1e-12)]
        return min(tied, key=lambda c: sum(t.link_bytes for t in c.breakdown.tables.values()))

    def _alternatives(self) -> dict[str, tuple[Strategy, ...]]:
        allowed = set(self.options.strategies) | {Strategy.ALL_HBM, Strategy.ALL_UVM}
        return {name: a for name, a in ALTERNATIVES.items() if set(a) <= allowed}

    def table_plans(self, choice: Choice) -> list[TablePlan]:
        """One `TablePlan` per table from `choice`."""
        out = []
        for c in self.configs:
            traffic = choice.tables[c.name].chosen.traffic
            out.append(realised_table_plan(c, traffic, self._plain_plan))
        return out

    def _plain_plan(self, config: EmbeddingBagConfig, hot_rows: int) -> TablePlan:
        """The plain hot/cold plan of a table with `hot_rows` hot rows (cached: the planner's
        rounds ask for the same ones again)."""
        key = (config.name, hot_rows)
        if key not in self._plain:
            self._plain[key] = table_plan_from_counts(
                config, self.counts[config.name], hot_rows, self.row_bytes[config.name]
            )
        return self._plain[key]

    def summary(
        self,
        choice: Choice,
        stock: ShardingPlan | None,
        table_plans: Sequence[TablePlan] = (),
        tuned: ShardingPlan | None = None,
    ) -> StrategySummary:
        """The report's view of `choice` beside stock TorchRec (`stock`: its default plan,
        `tuned`: its embedding offloading plan, key `TUNED_STOCK`) and the single strategies;
        `table_plans` (the plan's, when given) name what each table became (a look-forward
        split whose cache got no slots is a static split)."""
        became = {tp.name: tp.strategy for tp in table_plans}
        tables = []
        for c in self.configs:
            tc = choice.tables[c.name]
            cost = choice.breakdown.tables[c.name]
            runner = tc.runner_up
            tables.append(TableStrategy(
                table=c.name,
                strategy=became.get(c.name, tc.chosen.strategy.value),
                hbm_rows=tc.chosen.hbm_rows,
                modeled_ms=tc.chosen_ms,
                runner_up=runner.strategy.value if runner is not None else "",
                runner_up_ms=float(tc.runner_up_ms or 0.0),
                hbm_hit_rate=self.hbm_share(tc.chosen.traffic),
                host_link_bytes=cost.link_bytes,
                measured_batches=len(self.batches[c.name]) - default_warmup(
                    len(self.batches[c.name])),
                warmup_batches=default_warmup(len(self.batches[c.name])),
            ))
        picks: dict[str, Sequence[TableTraffic] | None] = {
            "ours": [choice.tables[c.name].chosen.traffic for c in self.configs],
            "stock TorchRec": self.stock_traffic(stock),
            TUNED_STOCK: self.stock_traffic(tuned),
        }
        for name, allowed in self._alternatives().items():
            alt = self.choose(choice.budget_bytes, allowed)
            picks[name] = [alt.tables[c.name].chosen.traffic for c in self.configs]
        picks["all HBM (limit)"] = [self.curves[c.name][Strategy.ALL_HBM][0] for c in self.configs]
        ms, hit, link = {}, {}, {}
        weight = {c.name: float(self.counts[c.name].sum()) for c in self.configs}
        for name, traffic in picks.items():
            if traffic is None:
                ms[name], hit[name], link[name] = math.nan, math.nan, math.nan
                continue
            breakdown = self.cost_model.evaluate(traffic)
            ms[name] = breakdown.embedding_ms
            lookups = sum(weight[t.table] for t in traffic)
            hit[name] = sum(self.hbm_share(t) * weight[t.table] for t in traffic) / max(
                lookups, 1e-12)
            link[name] = sum(c.link_bytes for c in breakdown.tables.values())
        stock_traffic, tuned_traffic = picks["stock TorchRec"], picks[TUNED_STOCK]
        b = choice.breakdown
        notes = (
            f"ours: HBM {b.hbm_ms:.4f} ms + host link on the critical path {b.link_ms:.4f} ms + "
            f"per-batch cache machinery {b.batch_machinery_ms:.4f} ms + "
            f"exposed prefetch {b.exposed_ms:.4f} ms (prefetch {b.background_ms:.4f} ms overlaps "
            f"a window of {b.window_ms:.4f} ms = HBM time + all-to-all {b.a2a_ms:.4f} ms + dense "
            f"{b.dense_ms:.4f} ms; prefetches are hidden while they fit the window)",
            f"choice within {choice.embedding_ms - choice.lower_bound_ms:.4f} ms of the best "
            f"possible (lower bound {choice.lower_bound_ms:.4f} ms)",
        )
        return StrategySummary(
            hardware=self.options.hardware.name,
            lookahead=self.options.look_ahead,
            evaluated_on=self.evaluated_on,
            tables=tuple(tables),
            model_ms=ms,
            model_hit_rate=hit,
            model_link_bytes=link,
            notes=notes,
            stock_hit_rate=(
                {t.table: self.hbm_share(t) for t in stock_traffic} if stock_traffic else {}
            ),
            global_batch=self.global_batch,
            tuned_stock_hit_rate=(
                {t.table: self.hbm_share(t) for t in tuned_traffic} if tuned_traffic else {}
            ),
        )

    def hbm_share(self, traffic: TableTraffic) -> float:
        """Share (0..1) of the table's lookups served from HBM under `traffic`, out of sample:
        static hot rows by `shares` (the report's definition), a cache by its simulated hit
        rate on the held-out batches after warm-up, over the lookups the hot rows leave."""
        s, name = traffic.strategy, traffic.table
        if self.shares is None or s is Strategy.ALL_HBM or s is Strategy.ALL_UVM:
            return traffic.hbm_hit_rate
        if s is Strategy.STATIC:
            return self.shares.hottest_share(name, traffic.hbm_rows)
        if traffic.hot_rows == 0:
            return traffic.hbm_hit_rate
        hot = self.shares.hottest_share(name, traffic.hot_rows)
        key = (name, traffic.hot_rows)
        if key not in self._static_hit:  # the hot rows' share of the simulated batches
            sim = evaluate_table(name, self.counts[name], self.batches[name], [traffic.hot_rows],
                                 strategies=[Strategy.STATIC])
            self._static_hit[key] = sim[Strategy.STATIC][0].hbm_hit_rate
        sim_hot = self._static_hit[key]
        cold = (traffic.hbm_hit_rate - sim_hot) / (1.0 - sim_hot) if sim_hot < 1 else 1.0
        return hot + (1.0 - hot) * min(1.0, max(0.0, cold))

    def stock_traffic(self, stock: ShardingPlan | None) -> list[TableTraffic] | None:
        """A stock TorchRec plan as traffic on the same trace: its kernel per table, a cache
        simulated at its load factor x rows (LRU, or LFU; with `prefetch_pipeline` the
        look-forward cache), cached by plan (None: no plan)."""
        if stock is None or not stock.plan:
            return None
        if id(stock) in self._stock_cache:
            return self._stock_cache[id(stock)][1]
        module = parameter_shardings(stock)
        out = []
        for c in self.configs:
            ps = module[c.name]
            curves = self.curves[c.name]
            if ps.compute_kernel in ("fused", "dense"):
                out.append(curves[Strategy.ALL_HBM][0])
            elif ps.compute_kernel == "fused_uvm_caching":
                params = ps.cache_params
                clf = hbm_fraction(ps, "cuda")  # its load factor, or TorchRec's default
                lfu = params is not None and params.algorithm is not None and (
                    params.algorithm.name == "LFU")
                strategy = Strategy.LFU_CACHE if lfu else Strategy.LRU_CACHE
                if params is not None and params.prefetch_pipeline:
                    strategy = Strategy.LOOK_FORWARD
                size = max(1, int(clf * c.num_embeddings))
                sim = evaluate_table(c.name, self.counts[c.name], self.batches[c.name], [size],
                                     look_ahead=self.options.look_ahead, strategies=[strategy])
                out.append(sim[strategy][0])
            else:
                out.append(curves[Strategy.ALL_UVM][0])
        self._stock_cache[id(stock)] = (stock, out)  # the plan is kept: its id stays unique
        return out

    def with_cost_model(self, cost_model: CostModel) -> StrategyEvaluation:
        """The same traffic curves (and simulated stock plans) under another cost model."""
        other = copy.copy(self)
        other.cost_model, other._choices = cost_model, {}
        return other
