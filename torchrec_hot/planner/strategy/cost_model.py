"""Modeled embedding time per training step, from the bytes each strategy moves per memory tier.

Input: `TableTraffic` (per table, per strategy, per HBM size, per *global* step; see
`strategies.py`). Output: milliseconds per step on one rank, term by term.

Notation (one table, one global step): `L` lookups, `U` lookups read in place from UVM,
`Q` unique rows, `F` rows fetched host -> HBM, `B` rows written back HBM -> host,
`W = dim x element bytes` (weight row), `S` optimizer-state bytes per row, `D x o` pooled
output bytes per bag (o = output element bytes), `n` world size, bandwidths in bytes/s:
`hbm`, `link` (host link, each direction; `min(host_link_bw, ddr_bw)`), `e` the UVM in-place
access efficiency (1.0 by default).

Terms (ms per step per rank; x 1000 for seconds -> ms):
  * forward HBM reads        `(L - U) W / n / hbm`  (hits, and cache misses once fetched)
  * forward UVM reads        `U W / n / (link e)`
  * backward gradient reads  `L D o / n / hbm`  (each lookup reads its bag's gradient)
  * backward HBM update      `(2 Q_hbm W + 2 Q_state_hbm S) / n / hbm`  (read + write)
  * backward UVM update      `(Q_uvm W + Q_state_uvm S) / n / (link e)`  (per direction; the
    read H->D and the write D->H run at once: the link is full duplex)
  * cache fills/write-backs  `max(F W, B W) / n / link`  (one kernel moves both directions)
  * all-to-all               `2 (n - 1) / n^2 x G D o x features / net`, `G` = global batch,
    `net` = intra-host bw when all ranks share a host, else inter-host bw (as TorchRec's
    `BasicCommsBandwidths.get_bw`); forward outputs + backward gradients. The same for every
    strategy, so it is reported separately and enters only the overlap window.
Row tiers (TableTraffic has no per-tier unique counts, so they are estimated):
`Q_uvm = min(U, Q)` (an upper bound: cold ids rarely repeat within a batch), `Q_hbm = Q - Q_uvm`.
FBGEMM keeps row-wise optimizer state on device for every placement; other state (Adam, ...)
lives with the weights in UVM and is never cached, so for non-row-wise state
`Q_state_uvm = Q` under a cache strategy (an upper bound for STATIC_LOOK_FORWARD, whose hot
rows' state is in HBM), `Q_uvm` under STATIC/ALL_UVM, 0 under ALL_HBM.

Balance: every term is the global step's bytes / n, i.e. the tables' traffic is assumed spread
evenly over the ranks (row-wise sharding, or a table-wise packing that balances). The step
waits for the slowest rank, so this is a lower bound that an imbalanced plan does not reach;
likewise the HBM budget is `budget / n` per rank.

Overlap (look-forward, `fetch_overlappable`): fills for step t+1 run during step t and use
the host link only while it is otherwise idle, i.e. during the overlap window
`window = HBM time of all tables + all-to-all + dense_ms`. Background time
`bg = max(F W, B W) / n / link`. Current-batch misses (`misses_current_batch`) are part of `U`
(read in place, on the critical path), as `strategy_sim` reports them, and are not charged
twice. Exposed = `max(0, sum bg - window)`: fetches are hidden while
their total is at most the window, and only the excess lengthens the step (e.g. a model whose
only HBM-side work is tiny, with no dense time, exposes almost all of it).

Cache machinery (`machinery.py`: FBGEMM's linearize/unique/find/insert/lookup kernels, with
the sources and the estimates of its constants): per id on the critical path for LRU/LFU
(part of `hbm_ms`, GPU time) and in the background for look-forward caches; plus a per-batch
charge per distinct cache kind of the plan (`CostBreakdown.batch_machinery_ms` on the critical
path, prefetched kinds' in the background).

All-reduce (`allreduce_ms`, for replicated rows, `replication.py`): a ring all-reduce of `X`
bytes moves `2 (n - 1) / n x X` bytes per rank over `net` (the all-to-all's bandwidth rule).

Headline: embedding ms = HBM time + critical link time + exposed + per-batch machinery;
all-to-all is reported separately, and step ms = embedding + all-to-all + dense.

Against TorchRec 1.8 (`constants.kernel_bw_lookup`, `estimator`): `fused` reads at
`hbm_mem_bw` (same as here). `fused_uvm` charges *all* lookups at `hbm_to_ddr_mem_bw / 10`;
here only the in-place UVM lookups cross the link, at `link x e` (e = 0.1 reproduces the /10).
`fused_uvm_caching` mixes HBM and link bandwidth by the load factor, whatever the hit rate; here
measured hits and fills count. With `prefetch_pipeline` TorchRec reads at HBM bandwidth and
adds `prefetch_compute = fetches x dim x dtype / hbm_to_ddr_mem_bw` as always blocking; here it
is blocking only beyond the window. TorchRec's backward is `2 x forward`; here it is the update
bytes above. TorchRec charges `fused_uvm`'s row-wise optimizer state to DDR; FBGEMM keeps it on
device, which is what this model charges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torchrec import EmbeddingBagConfig
from torchrec.modules.embedding_configs import data_type_to_dtype

from torchrec_hot.planner import memory
from torchrec_hot.planner.strategy.machinery import CacheMachinery, cache_kind
from torchrec_hot.planner.strategy.types import Strategy, TableTraffic

_MS_PER_S = 1000.0


@dataclass(frozen=True)
class HardwareSpec:
    """Bandwidths of one rank (GPU), all in bytes per second.

    Attributes:
        name: label for reports.
        hbm_bw: GPU memory bandwidth.
        host_link_bw: GPU <-> host link bandwidth in each direction (PCIe x16).
        ddr_bw: host memory bandwidth available to one GPU (socket bandwidth / GPUs on it).
        intra_host_bw: GPU <-> GPU bandwidth within a host, one direction (NVLink).
        inter_host_bw: network bandwidth per GPU between hosts, one direction.
    """

    name: str
    hbm_bw: float
    host_link_bw: float
    ddr_bw: float
    intra_host_bw: float
    inter_host_bw: float

    def __post_init__(self) -> None:
        keys = ("hbm_bw", "host_link_bw", "ddr_bw", "intra_host_bw", "inter_host_bw")
        if bad := [k for k in keys if not getattr(self, k) > 0]:
            raise ValueError(f"HardwareSpec {self.name!r}: {bad} must be > 0 bytes/s")

    @property
    def uvm_bw(self) -> float:
        """Bytes/s one GPU reads host rows at: the slower of its link and its DDR share."""
        return min(self.host_link_bw, self.ddr_bw)


# NVIDIA datasheets (H100 SXM5, A100 80GB SXM4, V100 SXM2); PCIe per direction x16: Gen5 64,
# Gen4 32, Gen3 16 GB/s; NVLink per direction = half the quoted bidirectional total (H100 900,
# A100 600, V100 300 GB/s); network one NIC per GPU (NDR 400, HDR 200, EDR 100 Gb/s); DDR:
# DGX-class hosts' socket bandwidth / GPUs (approximate; it only matters when below the link).
H100 = HardwareSpec("H100", 3.35e12, 64e9, 77e9, 450e9, 50e9)
A100 = HardwareSpec("A100", 2.039e12, 32e9, 51e9, 300e9, 25e9)  # 80GB SXM (40GB: 1.555e12)
V100 = HardwareSpec("V100", 900e9, 16e9, 57e9, 150e9, 12.5e9)  # the FAE paper's GPU


@dataclass(frozen=True)
class TableCostSpec:
    """Bytes and dims of one table's rows, as the cost model charges them (not the logical
    table's shape: that is `torchrec_hot.tables.spec.TableSpec`).

    Attributes:
        dim: embedding dimension.
        element_bytes: bytes per weight element (4 for fp32).
        optimizer_bytes: optimizer-state bytes per row (0 SGD, 4 row-wise Adagrad, 2W Adam).
        state_on_device: True when FBGEMM keeps the state in HBM for every placement
            (row-wise optimizers, or no state); False when it follows the weights to UVM.
        num_features: features (bags per sample) that look this table up.
        output_bytes: bytes per pooled output element (4 for fp32).
    """

    dim: int
    element_bytes: int = 4
    optimizer_bytes: int = 0
    state_on_device: bool = True
    num_features: int = 1
    output_bytes: int = 4

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.element_bytes <= 0 or self.output_bytes <= 0:
            raise ValueError(f"TableCostSpec needs positive dim and element sizes, got {self}")
        if self.optimizer_bytes < 0 or self.num_features < 0:
            raise ValueError(
                f"TableCostSpec needs non-negative optimizer bytes/features, got {self}"
            )

    @classmethod
    def from_config(
        cls, config: EmbeddingBagConfig, optimizer_class: type[torch.optim.Optimizer] | None
    ) -> TableCostSpec:
        """The spec of a TorchRec table, its row bytes equal to `memory.row_bytes`."""
        element = torch.empty((), dtype=data_type_to_dtype(config.data_type)).element_size()
        weights = config.embedding_dim * element
        return cls(
            dim=config.embedding_dim,
            element_bytes=element,
            optimizer_bytes=memory.row_bytes(config, optimizer_class) - weights,
            state_on_device=memory.optimizer_multiplier(optimizer_class, config.embedding_dim)
            <= 1.0 / config.embedding_dim,
            num_features=max(1, len(config.feature_names)),
        )

    @property
    def weight_bytes(self) -> int:
        """W: bytes of one row's weights."""
        return self.dim * self.element_bytes

    @property
    def row_bytes(self) -> int:
        """HBM bytes one hot row costs: weights + optimizer state."""
        return self.weight_bytes + self.optimizer_bytes


@dataclass(frozen=True)
class TableCost:
    """One table's modeled time per step on one rank (ms), before overlap, and its bytes.

    `hbm_ms` and `link_ms` are on the critical path; `background_ms` is look-forward traffic
    that the overlap window may hide (see `CostBreakdown.exposed_ms`); `machinery_ms` is the
    cache kernels' per-id time on the critical path (a look-forward cache's is in
    `background_ms`); `cache`: the (policy, prefetched) kind of its cache, None without one.
    """

    table: str
    strategy: Strategy
    hbm_rows: int
    hbm_hit_rate: float
    fwd_hbm_ms: float
    fwd_uvm_ms: float
    bwd_grad_ms: float
    bwd_hbm_ms: float
    bwd_uvm_ms: float
    fill_ms: float
    background_ms: float
    a2a_ms: float
    link_bytes: float  # per global step, both directions
    hbm_bytes: float  # per global step, reads + writes of rows and gradients
    machinery_ms: float = 0.0
    cache: tuple[str, bool] | None = None

    @property
    def hbm_ms(self) -> float:
        """Critical-path GPU time: forward reads + backward gradient reads + updates + the
        cache kernels' per-id time."""
        return self.fwd_hbm_ms + self.bwd_grad_ms + self.bwd_hbm_ms + self.machinery_ms

    @property
    def link_ms(self) -> float:
        """Critical-path host-link time: UVM reads and updates + non-overlapped fills."""
        return self.fwd_uvm_ms + self.bwd_uvm_ms + self.fill_ms


@dataclass(frozen=True)
class CostBreakdown:
    """The whole model's modeled time per step on one rank (ms), per term and per table."""

    tables: dict[str, TableCost]
    exposed_by_table: dict[str, float]
    hbm_ms: float
    link_ms: float
    background_ms: float
    window_ms: float
    exposed_ms: float
    a2a_ms: float
    dense_ms: float
    batch_machinery_ms: float = 0.0  # per-batch cache kernels on the critical path

    @property
    def embedding_ms(self) -> float:
        """Headline: HBM + critical link + exposed fetch + per-batch cache machinery ms
        (all-to-all excluded)."""
        return self.hbm_ms + self.link_ms + self.exposed_ms + self.batch_machinery_ms

    def table_ms(self, table: str) -> float:
        """A table's share of the embedding time: its HBM + link time + its exposed share."""
        cost = self.tables[table]
        return cost.hbm_ms + cost.link_ms + self.exposed_by_table[table]


class CostModel:
    """Maps `TableTraffic` to modeled milliseconds per step (formulas: module docstring).

    Args:
        hardware: bandwidths of one rank.
        world_size: ranks `n` the step's traffic is divided over.
        tables: shape of every table by name.
        batch_per_rank: samples per rank per step (global batch `G = n x batch_per_rank`).
        local_world_size: ranks per host (default: all on one host).
        dense_ms: dense compute per step per rank, which widens the overlap window.
        uvm_efficiency: `e`, share of link bandwidth reached by in-place row-sized UVM
            accesses (1.0; TorchRec's estimator assumes 0.1).
        machinery: GPU time of FBGEMM's cache kernels (`machinery.CacheMachinery()`: the
            estimated defaults; `NO_MACHINERY`: bytes only, as before).
    """

    def __init__(
        self,
        hardware: HardwareSpec,
        world_size: int,
        tables: Mapping[str, TableCostSpec],
        batch_per_rank: int,
        *,
        local_world_size: int | None = None,
        dense_ms: float = 0.0,
        uvm_efficiency: float = 1.0,
        machinery: CacheMachinery | None = None,
    ) -> None:
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if batch_per_rank < 0 or dense_ms < 0:
            raise ValueError("batch_per_rank and dense_ms must be >= 0")
        if not 0 < uvm_efficiency <= 1:
            raise ValueError(f"uvm_efficiency must be in (0, 1], got {uvm_efficiency}")
        self.hardware = hardware
        self.world_size = world_size
        self.tables = dict(tables)
        self.batch_per_rank = batch_per_rank
        self.local_world_size = world_size if local_world_size is None else local_world_size
        self.dense_ms = dense_ms
        self.uvm_efficiency = uvm_efficiency
        self.machinery = CacheMachinery() if machinery is None else machinery

    def spec(self, table: str) -> TableCostSpec:
        """The `TableCostSpec` of `table` (ValueError when the model does not know it)."""
        if table not in self.tables:
            raise ValueError(f"cost model has no TableCostSpec for table {table!r}")
        return self.tables[table]

    def row_bytes(self, table: str) -> int:
        """HBM bytes per hot row of `table`."""
        return self.spec(table).row_bytes

    @property
    def network_bw(self) -> float:
        """All-to-all bandwidth per rank (bytes/s), chosen as TorchRec's `get_bw` does."""
        if self.world_size <= self.local_world_size:
            return self.hardware.intra_host_bw
        return self.hardware.inter_host_bw

    def a2a_ms(self, table: str) -> float:
        """Pooled-output all-to-all of `table`, forward + backward, per rank (ms)."""
        spec, n = self.spec(table), self.world_size
        pooled = n * self.batch_per_rank * spec.num_features * spec.dim * spec.output_bytes
        return 2.0 * pooled * (n - 1) / n**2 / self.network_bw * _MS_PER_S

    def allreduce_ms(self, nbytes: float) -> float:
        """Ring all-reduce of `nbytes` (each rank's buffer) per rank (ms): `2 (n-1)/n x nbytes
        / net`; 0 on one rank."""
        n = self.world_size
        return 2.0 * (n - 1) / n * nbytes / self.network_bw * _MS_PER_S

    def table_cost(self, traffic: TableTraffic) -> TableCost:
        """Per-rank ms of each term for one table (no overlap applied; see `evaluate`)."""
        spec, n = self.spec(traffic.table), self.world_size
        _check_traffic(traffic)
        w, s = spec.weight_bytes, spec.optimizer_bytes
        hbm = self.hardware.hbm_bw * n / _MS_PER_S  # bytes per ms, all ranks together
        link = self.hardware.uvm_bw * n / _MS_PER_S
        uvm = link * self.uvm_efficiency
        q_uvm = min(traffic.uvm_lookups, traffic.unique_rows)
        q_hbm = traffic.unique_rows - q_uvm
        if spec.state_on_device or traffic.strategy == Strategy.ALL_HBM:
            state_uvm = 0.0
        elif traffic.strategy.cached:
            state_uvm = traffic.unique_rows
        else:
            state_uvm = q_uvm
        state_hbm = traffic.unique_rows - state_uvm
        grad_bytes = traffic.lookups * spec.dim * spec.output_bytes
        hbm_read = (traffic.lookups - traffic.uvm_lookups) * w
        hbm_update = 2.0 * (q_hbm * w + state_hbm * s)
        uvm_update = q_uvm * w + state_uvm * s  # each direction
        fill = max(traffic.fetched_rows, traffic.written_back_rows) * w / link
        fill, background = (0.0, fill) if traffic.fetch_overlappable else (fill, 0.0)
        machinery = self.machinery.table_ms(traffic, n)
        if traffic.strategy.prefetched:  # runs on the prefetch stream with the fills
            background, machinery = background + machinery, 0.0
        moved = traffic.uvm_lookups * w + (traffic.fetched_rows + traffic.written_back_rows) * w
        return TableCost(
            table=traffic.table, strategy=traffic.strategy, hbm_rows=traffic.hbm_rows,
            hbm_hit_rate=traffic.hbm_hit_rate,
            fwd_hbm_ms=hbm_read / hbm, fwd_uvm_ms=traffic.uvm_lookups * w / uvm,
            bwd_grad_ms=grad_bytes / hbm, bwd_hbm_ms=hbm_update / hbm,
            bwd_uvm_ms=uvm_update / uvm, fill_ms=fill, background_ms=background,
            a2a_ms=self.a2a_ms(traffic.table), link_bytes=moved + 2.0 * uvm_update,
            hbm_bytes=hbm_read + grad_bytes + hbm_update, machinery_ms=machinery,
            cache=cache_kind(traffic),
        )

    def evaluate(self, traffic: Iterable[TableTraffic | TableCost]) -> CostBreakdown:
        """The whole model's breakdown for one option per table, with overlap applied."""
        costs = [t if isinstance(t, TableCost) else self.table_cost(t) for t in traffic]
        by_table = {c.table: c for c in costs}
        if len(by_table) != len(costs):
            raise ValueError("evaluate takes one TableTraffic per table; got a table twice")
        hbm_ms = sum(c.hbm_ms for c in costs)
        a2a_ms = sum(c.a2a_ms for c in costs)
        batch_crit, batch_bg = self.machinery.batch_ms(c.cache for c in costs)
        background = sum(c.background_ms for c in costs) + batch_bg
        window = hbm_ms + batch_crit + a2a_ms + self.dense_ms
        exposed = max(0.0, background - window)
        share = exposed / background if background > 0 else 0.0
        return CostBreakdown(
            tables=by_table,
            exposed_by_table={c.table: c.background_ms * share for c in costs},
            hbm_ms=hbm_ms,
            link_ms=sum(c.link_ms for c in costs),
            background_ms=background,
            window_ms=window,
            exposed_ms=exposed,
            a2a_ms=a2a_ms,
            dense_ms=self.dense_ms,
            batch_machinery_ms=batch_crit,
        )


def _check_traffic(traffic: TableTraffic) -> None:
    """ValueError for traffic no simulator should produce (negative or inconsistent counts)."""
    name = f"{traffic.table}/{traffic.strategy.value}"
    for key in ("hbm_rows", "lookups", "unique_rows", "uvm_lookups", "fetched_rows",
                "written_back_rows", "misses_current_batch"):
        if getattr(traffic, key) < 0:
            raise ValueError(f"{name}: {key} < 0")
    if traffic.uvm_lookups > traffic.lookups * (1 + 1e-9):
        raise ValueError(f"{name}: uvm_lookups > lookups")
