"""NGroups on the cluster's three test hosts (tests/cluster.py): members spread over faultDomainCount nodes,
and a load-balancer frontend on one host's address balanced over the members on every host.

One `corral server` (SQLite) runs the orchestrator as its leader; each host runs `corral agent` in its
network namespace and applies the load balancer itself.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from cluster import CORRAL, UPLINK, ClusterFabric, free_port
from orchestration import fetch, ngroup_body, pool_id, profile_body, put_lb, put_ngroup, put_profile, steady, wait_until
from registry import run_registry

RG = "corcluster"


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFabric]:
    root = tmp_path_factory.mktemp("corcluster")
    fab = ClusterFabric(root)
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
                fab.start_server("s1", f"sqlite:///{root / 'store.db'}")
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
    port = free_port()
    put_lb(client, RG, "weblb", port)
    body = ngroup_body(client, RG, "web", 3, pools=[pool_id(client, RG, "weblb")])
    body["properties"]["placementProfile"] = {"faultDomainCount": 3}
    put_ngroup(client, RG, "web", body)
    ng = wait_until("3 members in service", steady(client, RG, "web", 3), timeout=120, every=0.5)
    members = {m["name"] for m in ng["properties"]["status"]["members"]}
    placed = nodes_of(fabric, members)
    assert sorted(placed.values()) == sorted(h.name for h in fabric.hosts), placed  # one per fault domain

    # Through host 1's address: the members on all three hosts answer (DNAT across the fabric).
    first = fabric.hosts[0].ip
    seen = wait_until("every member answers through one host", lambda: (
        got if (got := {fetch(port, host=first).split("-", 1)[1] for _ in range(40)}) == members else None),
        timeout=60)
    assert seen == members
    client.request("DELETE", f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/"
                   "Microsoft.ContainerInstance/ngroups/web")
    wait_until("members gone", lambda: not nodes_of(fabric, members), timeout=60)
