"""Properties of the pipeline over random clusters and random streams of groups (hypothesis):
it never over-commits a node, never breaks a required anti-affinity, keeps spread within maxSkew,
and the incrementally kept snapshot equals one rebuilt from the bound groups."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sched_support import group, node

from corral.scheduler.demand import NODE, Demand
from corral.scheduler.pipeline import Pipeline, SchedulerSettings, Unschedulable
from corral.scheduler.state import ClusterState

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

nodes_st = st.lists(st.fixed_dictionaries({
    "cpu": st.sampled_from([1, 2, 4]), "mem": st.sampled_from([2, 4, 8]),
    "zone": st.sampled_from([None, "1", "2", "3"]), "gpus": st.sampled_from([{}, {"V100": 1}, {"V100": 2}]),
    "maxGroups": st.integers(1, 6), "ready": st.booleans() | st.just(True),
}), min_size=1, max_size=7)

FAMILIES = {"f0": ("zone", 1), "f1": ("node", 1), "f2": ("zone", 2)}

group_st = st.fixed_dictionaries({
    "cpu": st.sampled_from([0.25, 0.5, 1.0, 1.5]), "mem": st.sampled_from([0.5, 1.0, 2.0]),
    "gpu": st.sampled_from([0, 0, 0, 1]), "port": st.sampled_from([None, None, 80, 443]),
    "app": st.sampled_from(["a", "b", "c"]), "family": st.sampled_from([None, "f0", "f1", "f2"]),
    "anti": st.sampled_from([None, None, "node", "zone"]), "strategy": st.sampled_from(["binpack", "spread"]),
})

ops_st = st.lists(st.one_of(group_st, st.integers(0, 50)), min_size=1, max_size=40)


def build_nodes(specs: list[dict[str, Any]]) -> ClusterState:
    state = ClusterState()
    for i, s in enumerate(specs):
        state.upsert_node(node(f"n{i}", cpu=s["cpu"], mem=s["mem"], zone=s["zone"], gpus=s["gpus"],
                               maxGroups=s["maxGroups"], ready=s["ready"]))
    state.subnets.define("s/rg/vnet/default", "10.0.0.0/8")
    return state


def make(i: int, g: dict[str, Any]) -> Demand:
    placement: dict[str, Any] = {}
    tags = {"app": g["app"]}
    if g["anti"]:
        placement["antiAffinity"] = [{"tags": {"app": g["app"]}, "topologyKey": g["anti"]}]
    if g["family"]:
        key, skew = FAMILIES[g["family"]]
        tags["family"] = g["family"]
        placement["spread"] = [{"tag": "family", "topologyKey": key, "maxSkew": skew}]
    return group(f"g{i}", cpu=g["cpu"], mem=g["mem"], tags=tags, placement=placement or None,
                 gpu={"count": g["gpu"], "sku": "V100"} if g["gpu"] else None,
                 ports=[g["port"]] if g["port"] else None)


def domain(state: ClusterState, node_name: str, key: str) -> str | None:
    if key == NODE:
        return node_name
    z = state.nodes.zone[state.nodes.index[node_name]]
    return state.nodes.zone_names[z] if z >= 0 else None


def eligible_domains(state: ClusterState, key: str) -> set[str | None]:
    nodes = state.nodes
    return {domain(state, nodes.names[i], key) for i in range(nodes.n) if nodes.ready[i]} - {None}


def family_counts(state: ClusterState, family: str, key: str) -> Counter[str | None]:
    out: Counter[str | None] = Counter({dom: 0 for dom in eligible_domains(state, key)})
    for b in state.bound.values():
        if b.demand.tags.get("family") == family:
            out[domain(state, b.node, key)] += 1
    return out


def check_no_over_commit(state: ClusterState, specs: list[dict[str, Any]]) -> None:
    per: dict[str, list[Demand]] = {}
    for b in state.bound.values():
        per.setdefault(b.node, []).append(b.demand)
    for i, s in enumerate(specs):
        ds = per.get(f"n{i}", [])
        assert sum(d.cpu for d in ds) <= s["cpu"] + 1e-9
        assert sum(d.mem for d in ds) <= s["mem"] + 1e-9
        assert sum(n for d in ds for _, n in d.gpus) <= s["gpus"].get("V100", 0)
        assert len(ds) <= s["maxGroups"]
        ports = [p for d in ds for p in d.ports]
        assert len(ports) == len(set(ports))


def check_anti_affinity(state: ClusterState) -> None:
    bound = list(state.bound.values())
    for a in bound:
        for term in a.demand.anti_affinity:
            for b in bound:
                if b is a or not term.selector.matches(b.demand.scope, b.demand.tags):
                    continue
                da, db = domain(state, a.node, term.key), domain(state, b.node, term.key)
                assert da is None or da != db, (a.demand.key, b.demand.key, term)


def snapshot_arrays(state: ClusterState) -> dict[str, Any]:
    n, nodes = state.nodes.n, state.nodes
    topo = state.topology
    return {
        "cpu": np.round(nodes.cpu_used[:n], 9).tolist(), "mem": np.round(nodes.mem_used[:n], 9).tolist(),
        "count": nodes.count[:n].tolist(),
        "gpus": {k: v[:n].tolist() for k, v in nodes.gpu_used.items() if v[:n].any()},
        "ports": {k: v[:n].tolist() for k, v in nodes.ports.items() if v[:n].any()},
        "addresses": state.subnets.subnets["s/rg/vnet/default"].used[:n].tolist(),
        "anti": {t: c for t, c in topo.anti.items() if c},
        "tags": {p: s for p, s in topo.by_tag.items() if s},
    }


@SETTINGS
@given(nodes_st, ops_st)
def test_placements_never_over_commit_nor_break_anti_affinity_nor_skew(specs, ops) -> None:  # type: ignore[no-untyped-def]
    state = build_nodes(specs)
    for i, op in enumerate(ops):
        if isinstance(op, int):  # a bound group leaves
            keys = sorted(state.bound)
            if keys:
                state.release(keys[op % len(keys)])
            continue
        d = make(i, op)
        before = snapshot_arrays(state)
        try:
            where = Pipeline(SchedulerSettings(strategy=op["strategy"])).place(d, state)
        except Unschedulable as exc:
            assert sum(exc.reasons.values()) == exc.total == len(specs)
            assert snapshot_arrays(state) == before  # a placement changes nothing
            continue
        assert snapshot_arrays(state) == before
        for s in d.spread:  # at placement: the chosen domain is within maxSkew of the emptiest
            counts = family_counts(state, s.family.tags[0][1], s.key)
            dom = domain(state, where, s.key)
            assert dom is not None and counts[dom] + 1 - min(counts.values()) <= s.max_skew
        state.bind(d, where)
        check_no_over_commit(state, specs)
        check_anti_affinity(state)


@SETTINGS
@given(nodes_st, st.lists(group_st, min_size=1, max_size=40))
def test_without_departures_every_family_stays_within_max_skew(specs, groups) -> None:  # type: ignore[no-untyped-def]
    state = build_nodes(specs)
    for i, g in enumerate(groups):
        d = make(i, g)
        try:
            state.bind(d, Pipeline(SchedulerSettings(strategy=g["strategy"])).place(d, state))
        except Unschedulable:
            continue
    for family, (key, skew) in FAMILIES.items():
        counts = family_counts(state, family, key)
        counts.pop(None, None)
        if counts:
            assert max(counts.values()) - min(counts.values()) <= skew, (family, counts)


@SETTINGS
@given(nodes_st, ops_st)
def test_the_incremental_snapshot_equals_a_rebuilt_one(specs, ops) -> None:  # type: ignore[no-untyped-def]
    state = build_nodes(specs)
    for i, op in enumerate(ops):
        if isinstance(op, int):
            keys = sorted(state.bound)
            if keys:
                state.release(keys[op % len(keys)])
            continue
        d = make(i, op)
        try:
            state.bind(d, Pipeline().place(d, state))
        except Unschedulable:
            pass
    fresh = build_nodes(specs)
    for key in sorted(state.bound, reverse=True):  # another order, from scratch
        fresh.bind(state.bound[key].demand, state.bound[key].node)
    assert snapshot_arrays(fresh) == snapshot_arrays(state)
