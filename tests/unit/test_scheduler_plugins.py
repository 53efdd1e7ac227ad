"""Each filter and score plugin of the scheduler, alone and through the pipeline's reasons."""

from __future__ import annotations

import numpy as np
import pytest
from sched_support import group, node, place, place_and_bind, snapshot

from corral.scheduler.pipeline import Unschedulable
from corral.scheduler.plugin import Context
from corral.scheduler.plugins.addresses import Addresses
from corral.scheduler.plugins.affinity import PreferredAffinity, RequiredAffinity
from corral.scheduler.plugins.antiaffinity import RequiredAntiAffinity
from corral.scheduler.plugins.binpack import ResourceAllocation
from corral.scheduler.plugins.capacity import GroupCapacity
from corral.scheduler.plugins.health import NodeReady, NodeSchedulable
from corral.scheduler.plugins.nodeselector import NodeSelector
from corral.scheduler.plugins.ostype import OsType
from corral.scheduler.plugins.ports import PublicPorts
from corral.scheduler.plugins.resources import Cpu, Gpu, Memory
from corral.scheduler.plugins.spread import SpreadFilter, SpreadScore
from corral.scheduler.plugins.zones import Zones
from corral.scheduler.state import ClusterState


def mask(plugin, state: ClusterState, d) -> list[bool]:  # type: ignore[no-untyped-def]
    """The nodes the plugin lets the group go to (all, when the group does not need the check)."""
    ctx = Context(d, state, state.nodes.n)
    if not plugin.applies(ctx):
        return [True] * state.nodes.n
    return [bool(x) for x in plugin.feasible(ctx)]


def reason(state: ClusterState, d) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(Unschedulable) as exc:
        place(state, d)
    return str(exc.value)


ZONED = [node("a1", zone="1"), node("a2", zone="1"), node("b1", zone="2"), node("c1", zone="3")]


def test_health_not_ready_and_cordoned_nodes_take_nothing() -> None:
    state = snapshot(node("ok"), node("sick", ready=False), node("cordoned", unschedulable=True))
    d = group("g")
    assert mask(NodeReady(), state, d) == [True, False, True]
    assert mask(NodeSchedulable(), state, d) == [True, True, False]
    assert place(state, d) == "ok"
    state.upsert_node(node("ok", unschedulable=True))
    assert reason(state, d) == "0/3 nodes are available: 2 node cordoned, 1 node not ready"


def test_os_type() -> None:
    state = snapshot(node("lin"), node("win", osType="Windows"))
    assert mask(OsType(), state, group("w", os="Windows")) == [False, True]
    assert place(state, group("w", os="Windows")) == "win"


def test_zones_only_nodes_in_them() -> None:
    state = snapshot(*ZONED)
    assert mask(Zones(), state, group("g", zones=["2", "3"])) == [False, False, True, True]
    assert "4 zone mismatch" in reason(snapshot(*ZONED), group("g", zones=["9"]))


def test_node_selector_needs_every_label() -> None:
    state = snapshot(node("ssd", labels={"disk": "ssd", "arch": "x86"}), node("hdd", labels={"disk": "hdd"}),
                     node("bare"))
    d = group("g", placement={"nodeSelector": {"disk": "ssd", "arch": "x86"}})
    assert mask(NodeSelector(), state, d) == [True, False, False]
    assert place(state, group("h", placement={"nodeSelector": {"disk": "hdd"}})) == "hdd"


def test_cpu_and_memory_fit_on_requests() -> None:
    state = snapshot(node("small", cpu=1, mem=1), node("big", cpu=4, mem=16))
    place_and_bind(state, group("first", cpu=0.6, mem=0.6))  # least allocated: big
    assert mask(Cpu(), state, group("g", cpu=1, mem=0.1)) == [True, True]
    assert mask(Cpu(), state, group("g", cpu=3.5, mem=0.1)) == [False, False]
    assert mask(Memory(), state, group("g", cpu=0.1, mem=2)) == [False, True]
    # Decimal requests that add up exactly still fit (float sums drift).
    exact = snapshot(node("n", cpu=0.3, mem=0.3))
    place_and_bind(exact, group("x", cpu=0.1, mem=0.1))
    place_and_bind(exact, group("y", cpu=0.1, mem=0.1))
    assert place(exact, group("z", cpu=0.1, mem=0.1)) == "n"


def test_gpu_count_by_sku() -> None:
    state = snapshot(node("plain"), node("v100", gpus={"V100": 2}), node("k80", gpus={"K80": 4}))
    two = group("g", gpu={"count": 2, "sku": "v100"})  # SKU names compare without case
    assert mask(Gpu(), state, two) == [False, True, False]
    assert place_and_bind(state, two) == "v100"
    msg = reason(state, group("h", gpu={"count": 1, "sku": "V100"}))
    assert msg == "0/3 nodes are available: 3 insufficient gpu V100"
    assert "insufficient gpu A100" in reason(state, group("i", gpu={"count": 1, "sku": "A100"}))
    assert place(state, group("j", gpu={"count": 4, "sku": "K80"})) == "k80"
    state.release(two.key)
    assert place(state, group("h", gpu={"count": 1, "sku": "V100"})) == "v100"


def test_group_capacity() -> None:
    state = snapshot(node("one", maxGroups=1), node("two", maxGroups=2))
    place_and_bind(state, group("a", cpu=0.1, mem=0.1))
    place_and_bind(state, group("b", cpu=0.1, mem=0.1))
    place_and_bind(state, group("c", cpu=0.1, mem=0.1))
    assert mask(GroupCapacity(), state, group("d")) == [False, False]
    assert reason(state, group("d", cpu=0.1, mem=0.1)) == "0/2 nodes are available: 2 too many groups"
    # A stopped group holds no slot (nor compute): the next one fits again.
    state.bind(group("a", cpu=0.1, mem=0.1, stopped=True), state.bound["/groups/s/rg/a"].node)
    assert place(state, group("d", cpu=0.1, mem=0.1)) in ("one", "two")


def test_addresses_per_node_block_and_blocks_left_to_grant() -> None:
    # A /29 in /30 blocks: two blocks of one usable address each.
    state = ClusterState(block_prefixlen=30)
    for n in ("a", "b", "c"):
        state.upsert_node(node(n))
    state.subnets.define("s/rg/vnet/default", "10.0.0.0/29")
    state.subnets.set_grants("s/rg/vnet/default", {"a": "10.0.0.0/30"})
    d = group("g1", cpu=0.1, mem=0.1)
    assert mask(Addresses(), state, d) == [True, True, True]  # a has its block; b and c can get the other
    place_and_bind(state, d)
    place_and_bind(state, group("g2", cpu=0.1, mem=0.1))
    assert mask(Addresses(), state, group("g3")) == [False, False, False]
    assert "3 no free address in subnet default" in reason(state, group("g3", cpu=0.1, mem=0.1))
    state.release("/groups/s/rg/g2")  # its reserved block is returned with it
    assert place(state, group("g3", cpu=0.1, mem=0.1)) in ("b", "c")


def test_public_ports_conflict_on_the_node() -> None:
    state = snapshot(node("a"), node("b"))
    assert place_and_bind(state, group("web1", ports=[80])) == "a"
    assert mask(PublicPorts(), state, group("web2", ports=[80, 443])) == [False, True]
    assert place_and_bind(state, group("web2", ports=[80])) == "b"
    assert "2 public port 80/TCP in use" in reason(state, group("web3", ports=[80]))
    assert place(state, group("other", ports=[8080])) in ("a", "b")


def test_required_affinity_by_node_and_zone() -> None:
    state = snapshot(*ZONED)
    place_and_bind(state, group("db", tags={"app": "db"}, placement={"nodeSelector": {}}, zones=["2"]))
    near_node = group("web", placement={"affinity": [{"tags": {"app": "db"}, "topologyKey": "node"}]})
    assert mask(RequiredAffinity(), state, near_node) == [False, False, True, False]
    near_zone = group("web", placement={"affinity": [{"tags": {"app": "db"}, "topologyKey": "zone"}]})
    assert mask(RequiredAffinity(), state, near_zone) == [False, False, True, False]
    place_and_bind(state, group("db2", tags={"app": "db"}, zones=["1"]))
    assert mask(RequiredAffinity(), state, near_zone) == [True, True, True, False]
    # Nothing carries the tags, and the group does not either: it waits, saying why.
    lonely = group("w", placement={"affinity": [{"tags": {"app": "cache"}}]})
    assert "4 affinity not satisfied" in reason(state, lonely)
    # The first of a set that wants to be together goes anywhere.
    first = group("c1", tags={"app": "cache"}, placement={"affinity": [{"tags": {"app": "cache"}}]})
    assert mask(RequiredAffinity(), state, first) == [True] * 4
    # Other resource groups' tags do not count.
    assert mask(RequiredAffinity(), state, group("x", rg="other", placement={
        "affinity": [{"tags": {"app": "db"}}]})) == [False] * 4


def test_required_anti_affinity_is_symmetric() -> None:
    state = snapshot(*ZONED)
    spread_me = {"antiAffinity": [{"tags": {"app": "web"}, "topologyKey": "zone"}]}
    placed = {place_and_bind(state, group(f"w{i}", tags={"app": "web"}, placement=spread_me)) for i in range(3)}
    assert {state.nodes.zone_names[state.nodes.zone[state.nodes.index[n]]] for n in placed} == {"1", "2", "3"}
    assert "anti-affinity conflict" in reason(state, group("w4", tags={"app": "web"}, placement=spread_me))
    # A group without terms of its own is kept away by the bound groups' terms when it matches them.
    plain = group("w5", tags={"app": "web"})
    assert mask(RequiredAntiAffinity(), state, plain) == [False] * 4
    assert mask(RequiredAntiAffinity(), state, group("db", tags={"app": "db"})) == [True] * 4


def test_spread_filter_keeps_zones_within_max_skew() -> None:
    state = snapshot(*ZONED, node("nozone"))
    fam = {"spread": [{"tag": "ngroup", "topologyKey": "zone", "maxSkew": 1}]}
    zones = []
    for i in range(6):
        where = place_and_bind(state, group(f"m{i}", tags={"ngroup": "web"}, placement=fam), strategy="binpack")
        zones.append(state.nodes.zone_names[state.nodes.zone[state.nodes.index[where]]])
    assert sorted(zones) == ["1", "1", "2", "2", "3", "3"]
    d = group("m6", tags={"ngroup": "web"}, placement=fam)
    assert mask(SpreadFilter(), state, d) == [True, True, True, True, False]  # a node without a zone is in none
    # Another family is not held back by this one.
    other = group("o", tags={"ngroup": "api"}, placement=fam)
    assert mask(SpreadFilter(), state, other)[:4] == [True] * 4


def test_spread_by_node_and_the_emptiest_domain_holds_the_rest_back() -> None:
    state = snapshot(node("a", cpu=1), node("b", cpu=8), node("c", cpu=8))
    fam = {"spread": [{"tag": "f", "topologyKey": "node", "maxSkew": 1}]}
    where = [place_and_bind(state, group(f"m{i}", cpu=1, tags={"f": "x"}, placement=fam), strategy="binpack")
             for i in range(5)]
    # One on each node, then b and c up to 2: node a is full but still counts as the emptiest domain ...
    assert sorted(where[:3]) == ["a", "b", "c"] and sorted(where[3:]) == ["b", "c"]
    # ... so a sixth would make 3 against a's 1.
    assert "topology spread not satisfied" in reason(state, group("m5", cpu=1, tags={"f": "x"}, placement=fam))


def test_resource_allocation_binpack_or_spread() -> None:
    state = snapshot(node("a"), node("b"))
    place_and_bind(state, group("x", cpu=2, mem=2))
    d = group("y", cpu=1, mem=1)
    ctx = Context(d, state, state.nodes.n)
    most = ResourceAllocation("binpack").score(ctx, np.ones(2, dtype=bool))
    least = ResourceAllocation("spread").score(ctx, np.ones(2, dtype=bool))
    assert most[0] > most[1] and least[0] < least[1]
    assert place(state, d, strategy="binpack") == "a" and place(state, d, strategy="spread") == "b"


def test_preferred_affinity_and_anti_affinity_scores() -> None:
    state = snapshot(node("a"), node("b"), node("c"))
    place_and_bind(state, group("cache", tags={"app": "cache"}))  # -> a
    place_and_bind(state, group("noisy", tags={"app": "noisy"}))  # -> b
    d = group("web", placement={"affinity": [{"tags": {"app": "cache"}, "required": False, "weight": 50}]})
    score = PreferredAffinity().score(Context(d, state, 3), np.ones(3, dtype=bool))
    assert score[0] > score[1] == score[2]
    assert place(state, d) == "a"  # preferred over the emptier node c
    away = group("web2", placement={"antiAffinity": [{"tags": {"app": "noisy"}, "required": False, "weight": 100}]})
    assert place(state, away, strategy="binpack") != "b"


def test_spread_score_when_unsatisfiable_schedule_anyway() -> None:
    state = snapshot(node("a", zone="1"), node("b", zone="2"))
    soft = {"spread": [{"tag": "f", "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]}
    assert place_and_bind(state, group("m0", tags={"f": "x"}, placement=soft)) == "a"
    d = group("m1", tags={"f": "x"}, placement=soft)
    score = SpreadScore().score(Context(d, state, 2), np.ones(2, dtype=bool))
    assert score[0] < score[1]
    assert place(state, d, strategy="binpack") == "b"  # spread wins over packing
    # Zone 2 has no room left: a hard constraint would refuse, a soft one places where the skew grows.
    state.upsert_node(node("b", zone="2", cpu=0.5))
    assert place(state, d) == "a"
    hard = {"spread": [{"tag": "f", "topologyKey": "zone"}]}
    assert "topology spread not satisfied" in reason(state, group("m2", tags={"f": "x"}, placement=hard))
