"""Co-locating cold halves with their hot halves (planner/colocate.py)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import profile_of_ids, tables_of
from torchrec_hot import HotPlanner, make_topology
from torchrec_hot.planner.colocate import colocate_split_tables, movable_cold_halves
from torchrec_hot.planner.table_plans import plan_rank_bytes
from torchrec_hot.tables.split import Placement, split_module_path

PROPS = settings(max_examples=8, deadline=None, derandomize=True)


def _plan(seed: int, world: int, device: str, colocate: bool, cold_types=None):
    rng = np.random.default_rng(seed)
    # 3-8 tables: rows U[200, 4000) and dim 16 or 32, drawn table after table
    drawn = [(int(rng.integers(200, 4000)), int(rng.choice([16, 32])))
             for _ in range(int(rng.integers(3, 9)))]
    tables = tables_of([n for n, _ in drawn], [d for _, d in drawn])
    profile = profile_of_ids(tables, {
        t.name: np.minimum(rng.zipf(1.2, size=3000) - 1, t.num_embeddings - 1) for t in tables
    })
    budget = int(sum(t.num_embeddings * t.embedding_dim * 4 for t in tables) * 0.1 / world)
    planner = HotPlanner(make_topology(world, device), budget, batch_size=64,
                         sharding_types=["table_wise"], cold_sharding_types=cold_types,
                         compare_with_stock=False, colocate=colocate)
    return planner.plan(tables, profile, module_path="m")


def _ranks(plan, part: str) -> list[int]:
    return plan.sharding_plan.plan[split_module_path("m")][part].ranks


@PROPS
@given(seed=st.integers(0, 2**31 - 1), world=st.sampled_from([2, 4]),
       device=st.sampled_from(["cpu", "cuda"]))
def test_planned_halves_share_a_rank_and_the_device_of_it(seed, world, device):
    plan = _plan(seed, world, device, colocate=True)
    module_plan = plan.sharding_plan.plan[split_module_path("m")]
    split = [t for t in plan.tables if t.placement is Placement.SPLIT]
    assert split, "the budget should split some table"
    for t in split:
        hot, cold = module_plan[t.name + "__hot"], module_plan[t.name + "__cold"]
        assert hot.ranks == cold.ranks, t.name
        assert str(cold.sharding_spec.shards[0].placement) == str(
            hot.sharding_spec.shards[0].placement)
        assert cold.compute_kernel == ("fused_uvm" if device == "cuda" else "fused")
    # the HBM rows per rank are those of the plan before the move
    apart = _plan(seed, world, device, colocate=False)
    assert plan.hbm_bytes_per_rank == apart.hbm_bytes_per_rank


def test_row_wise_cold_halves_stay_where_they_are():
    plan = _plan(5, 2, "cuda", colocate=True, cold_types=["row_wise"])
    for t in plan.tables:
        if t.placement is Placement.SPLIT:
            assert _ranks(plan, t.name + "__cold") == [0, 1]


def test_a_move_that_overfills_host_memory_is_not_made():
    apart = _plan(11, 2, "cpu", colocate=False)
    movable = movable_cold_halves(apart.tables)
    module = split_module_path("m")
    moves = [n for n in movable
             if _ranks(apart, n + "__hot") != _ranks(apart, n + "__cold")]
    assert moves, "TorchRec should have put some halves apart"
    _, used = plan_rank_bytes(apart.tables, apart.sharding_plan, 2)
    first = moves[0]
    dst = _ranks(apart, first + "__hot")[0]
    # room for exactly the first move on its destination, none for any later one there
    room = list(used)
    room[dst] = used[dst] + movable[first]
    room[1 - dst] = 10**15
    plan, together = colocate_split_tables(
        apart.sharding_plan, movable, used, room)
    assert first in together
    assert plan.plan[module][first + "__cold"].ranks == [dst]
    _, after = plan_rank_bytes(apart.tables, plan, 2)
    assert all(a <= r for a, r in zip(after, room, strict=True)), (after, room)
    into_dst = [n for n in moves[1:] if _ranks(apart, n + "__hot") == [dst]]
    if into_dst and not any(_ranks(apart, n + "__cold") == [dst] for n in moves):
        # nothing leaves dst, so nothing else fits there
        assert all(plan.plan[module][n + "__cold"].ranks != [dst] for n in into_dst)
    # one byte less: that move is skipped, the others are made
    room[dst] -= 1
    plan, together = colocate_split_tables(
        apart.sharding_plan, movable, used, room)
    assert first not in together and plan.plan[module][first + "__cold"].ranks != [dst]
    assert set(together) == set(movable) - {first}
    # the input plan is untouched
    assert _ranks(apart, first + "__cold") != [dst]
