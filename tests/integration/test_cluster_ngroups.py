"""NGroups on the cluster's three test hosts (tests/cluster.py): members spread over faultDomainCount nodes,
a load-balancer frontend on one host's address balanced over the members on every host, and a rolling
update that outlives the leader: SIGKILLed mid-rollout, the other server's orchestrator finishes it.

Two `corral server`s share one etcd; the leader runs the orchestrator; each host runs `corral agent` in its
network namespace and applies the load balancer itself.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cluster import CORRAL, UPLINK, ClusterFabric
from etcd_support import EtcdCluster
from orchestration import (
    RequestLoop,
    fetch,
    get_ngroup,
    members,
    ngroup_body,
    pool_id,
    profile_body,
    put_lb,
    put_ngroup,
    put_profile,
    steady,
    wait_until,
)
from ports import free_port
from registry import run_registry

RG = "corcluster"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdCluster) -> Iterator[ClusterFabric]:
    root = tmp_path_factory.mktemp("corcluster")
    fab = ClusterFabric(root)
    namespace = f"/corcl{uuid.uuid4().hex[:8]}"
    fab.leader_of = lambda: fab.leader(etcd.url(namespace))  # type: ignore[attr-defined]
    try:
        fab.build()
        with run_registry(root / "registry", host=UPLINK) as reg:
            try:
                fab.env["CORRAL_INSECURE_REGISTRIES"] = reg.host_port
                fab.image = f"{reg.host_port}/corral/busybox:latest"  # type: ignore[attr-defined]
                build = root / "build"
                subprocess.run([CORRAL, "image", "build-base", "--data-dir", str(build)], check=True,
                               capture_output=True)
                subprocess.run([CORRAL, "image", "push", "corral/busybox:latest", fab.image,  # type: ignore[attr-defined]
                                "--data-dir", str(build)], check=True, capture_output=True, env=fab.env)
                fab.start_server("s1", etcd.url(namespace))
                fab.start_server("s2", etcd.url(namespace))
                for h in fab.hosts:
                    fab.start_agent(h, wait=False)
                for h in fab.hosts:
                    fab.wait_node(h, "Ready")
                yield fab
            finally:
                fab.close()
    finally:
        fab.cleanup_network()
        assert fab.leftovers() == []


def nodes_of(fab: ClusterFabric, names: set[str]) -> dict[str, str]:
    """member name -> the node it runs on (the nodes API)."""
    client = fab.client()
    out = {}
    for n in client.request("GET", "/providers/Corral/nodes").json()["value"]:
        detail = client.request("GET", f"/providers/Corral/nodes/{n['name']}").json()
        out.update({g["name"]: n["name"] for g in detail["properties"]["groups"] if g["name"] in names})
    return out


def test_members_spread_over_fault_domains_and_the_frontend_balances_across_hosts(fabric: ClusterFabric) -> None:
    client = fabric.client()
    page = "on-$(hostname)"
    put_profile(client, RG, "web", profile_body(page, image=fabric.image))  # type: ignore[attr-defined]
    port = free_port(UPLINK)
    put_lb(client, RG, "weblb", port)
    body = ngroup_body(client, RG, "web", 3, pools=[pool_id(client, RG, "weblb")])
    body["properties"]["placementProfile"] = {"faultDomainCount": 3}
    put_ngroup(client, RG, "web", body)
    ng = wait_until("3 members in service", steady(client, RG, "web", 3), timeout=120, every=0.5)
    names = {m["name"] for m in ng["properties"]["status"]["members"]}
    placed = nodes_of(fabric, names)
    assert sorted(placed.values()) == sorted(h.name for h in fabric.hosts), placed  # one per fault domain

    # Through host 1's address: the members on all three hosts answer (DNAT across the fabric).
    first = fabric.hosts[0].ip
    seen = wait_until("every member answers through one host", lambda: (
        got if (got := {fetch(port, host=first).split("-", 1)[1] for _ in range(40)}) == names else None),
        timeout=60)
    assert seen == names
    client.request("DELETE", f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/"
                   "Microsoft.ContainerInstance/ngroups/web")
    wait_until("members gone", lambda: not nodes_of(fabric, names), timeout=60)


def test_a_rollout_outlives_the_leader_with_no_failed_request(fabric: ClusterFabric) -> None:
    """SIGKILL the leader (and its orchestrator) in the middle of a rolling update under a request loop.

    The other server is elected and its orchestrator carries on from the NGroup, its status and its members'
    tags. The load balancer is the agents' (DNAT on every host), not the servers', so a client of the frontend
    has nothing to notice: no request fails. The rollout completes, with exactly the desired members, each
    running once, in the pool.
    """
    dead = fabric.leader_of()  # type: ignore[attr-defined]
    survivor = next(s for s in fabric.servers if s is not dead)
    client = fabric.client(survivor)
    image = fabric.image  # type: ignore[attr-defined]
    put_profile(client, RG, "roll", profile_body("v1-$(hostname)", image=image))
    port = free_port(UPLINK)
    put_lb(client, RG, "rolllb", port)
    pools = [pool_id(client, RG, "rolllb")]

    def body(revision: int | None = None) -> dict[str, Any]:  # one member a batch, a second between batches
        return ngroup_body(client, RG, "roll", 4, revision=revision, pools=pools, batch=25,
                           pauseTimeBetweenBatches="PT1S")
    put_ngroup(client, RG, "roll", body())
    wait_until("4 members of revision 1", steady(client, RG, "roll", 4, revision=1), timeout=120, every=0.5)
    put_profile(client, RG, "roll", profile_body("v2-$(hostname)", image=image))

    with RequestLoop(port, host=fabric.hosts[0].ip) as loop:
        put_ngroup(client, RG, "roll", body(revision=2))

        def midway() -> Any:
            st = get_ngroup(client, RG, "roll")["properties"]["status"]
            revisions = {m["revision"] for m in st["members"] if m["inService"]}
            return st if (st.get("rollout") or {}).get("batch", 0) >= 2 and revisions == {1, 2} else None
        wait_until("the rollout half way", midway, timeout=90, every=0.2)
        fabric.kill_server(dead)  # SIGKILL: its orchestrator stops wherever it was
        ng = wait_until("the survivor's orchestrator finished the rollout", steady(client, RG, "roll", 4, revision=2),
                        timeout=180, every=0.5)
        wait_until("v2 answers only", lambda: all(fetch(port, fabric.hosts[0].ip).startswith("v2-")
                                                  for _ in range(10)), timeout=30)
    assert loop.failures == [], f"{len(loop.failures)} of {loop.total} requests failed: {loop.failures[:5]}"
    assert {page.split("-")[0] for page in loop.pages} == {"v1", "v2"}
    assert fabric.leader_of() is survivor  # type: ignore[attr-defined]
    st = ng["properties"]["status"]
    assert st["rollout"]["state"] == "Complete" and st["currentRevision"] == 2
    assert [(h["revision"], h["result"]) for h in st["history"]] == [(1, "Complete"), (2, "Complete")]
    # No member lost or duplicated: four groups, all of revision 2, the pool naming exactly them, each running
    # on exactly one host (and nothing else running on the hosts).
    wait_until("the last old member gone", lambda: len(members(client, RG, "roll")) == 4, timeout=60)
    groups = members(client, RG, "roll")
    listed = wait_until("the status without the old members", lambda: m if len(m := get_ngroup(
        client, RG, "roll")["properties"]["status"]["members"]) == 4 else None, timeout=30)
    assert {g["name"] for g in groups} == {m["name"] for m in listed} and all(m["inService"] for m in listed)
    assert all(g["properties"]["containerGroupProfile"]["revision"] == 2 for g in groups)
    pool = client.request("GET", pools[0]).json()
    assert {a["name"] for a in pool["properties"]["loadBalancerBackendAddresses"]} == {g["name"] for g in groups}
    copies = wait_until("one copy of each member", lambda: c if len(c := fabric.running_groups()) == 4 else None,
                        timeout=30)
    assert all(len(hosts) == 1 for hosts in copies.values()), copies
