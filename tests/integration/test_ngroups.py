"""NGroups with real containers: members behind a load balancer, scaling, replacement, DNS, rolling
updates under load with zero failed requests, automatic rollback, Manual mode and in-place updates.

Members are busybox httpd (0.1 CPU) whose page names their revision and host name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from corral_server import CorralServer, free_port
from groups import exec_sync
from orchestration import (
    RequestLoop,
    emptied_after,
    fetch,
    get_ngroup,
    members,
    ngroup_body,
    ngroup_path,
    pool_id,
    profile_body,
    put_lb,
    put_ngroup,
    put_profile,
    rg_path,
    steady,
    wait_until,
)

from corral.cli.client import Client

RG = "corngroups"
# The page of a member: its revision's name and its host name (the member's name).
PAGE = "{rev}-$(hostname)"
WEB_CMD = "mkdir -p /www && echo {page} > /www/index.html && trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"


@pytest.fixture(scope="module")
def client(corral: CorralServer) -> Iterator[Client]:
    yield from emptied_after(corral, RG)


def in_service(client: Client, name: str) -> list[dict[str, Any]]:
    return [m for m in get_ngroup(client, RG, name)["properties"]["status"]["members"] if m["inService"]]


def hosts(port: int, n: int = 40) -> set[str]:
    return {fetch(port).split("-", 1)[1] for _ in range(n)}


def test_ngroup_behind_load_balancer_scales_replaces_and_resolves(client: Client) -> None:
    put_profile(client, RG, "web", profile_body(PAGE.format(rev="v1")))
    port = free_port()
    subnet = client.request("GET", "/subscriptions/" + client.sub + "/providers/Microsoft.Network/virtualNetworks"
                            ).json()["value"][0]["properties"]["subnets"][0]["id"]
    lb = put_lb(client, RG, "weblb", port, private_subnet=subnet)
    vip = next(f for f in lb["properties"]["frontendIPConfigurations"] if f["name"] == "vip")
    vip_ip = vip["properties"]["privateIPAddress"]
    resp = put_ngroup(client, RG, "web", ngroup_body(client, RG, "web", 5, pools=[pool_id(client, RG, "weblb")]))
    assert resp.status_code == 201 and resp.headers["Azure-AsyncOperation"] and resp.headers["Retry-After"]
    assert client.wait_operation(resp, timeout=90)["status"] == "Succeeded"
    ng = wait_until("5 members in service", steady(client, RG, "web", 5), timeout=60)
    assert ng["properties"]["provisioningState"] == "Succeeded"
    names = {m["name"] for m in ng["properties"]["status"]["members"]}
    assert all(re.fullmatch(r"web-[0-9a-f-]{36}", n) for n in names)
    # Traffic to the public frontend is spread over the members.
    assert len(hosts(port)) >= 3
    # The private frontend, from inside the virtual network (a member), and the NGroup's DNS name.
    one = sorted(names)[0]
    got = exec_sync(client, RG, one, "web", "sh", "-c", f"wget -q -O - http://{vip_ip}/")
    assert got["exitCode"] == 0 and got["stdout"].startswith("v1-"), got
    dns = exec_sync(client, RG, one, "web", "nslookup", f"web.{RG}.corral.local")
    answers = dns["stdout"].split("Name:", 1)[-1]  # after the server's own lines
    answered = set(re.findall(r"Address(?: \d+)?:\s+([0-9.]+)\s", answers))
    assert answered == {m["ip"] for m in in_service(client, "web")}, dns

    # Scale to 8, then to 2 (a PATCH of desiredCount, as a client would).
    client.request("PATCH", ngroup_path(client, RG, "web"),
                   json={"properties": {"elasticProfile": {"desiredCount": 8}}})
    wait_until("8 members", steady(client, RG, "web", 8), timeout=60)
    assert len(hosts(port, 60)) >= 5
    client.request("PATCH", ngroup_path(client, RG, "web"),
                   json={"properties": {"elasticProfile": {"desiredCount": 2}}})
    wait_until("2 members", steady(client, RG, "web", 2), timeout=60)
    wait_until("6 members deleted", lambda: len(members(client, RG, "web")) == 2, timeout=60)
    ng = get_ngroup(client, RG, "web")
    pool = client.request("GET", pool_id(client, RG, "weblb")).json()
    assert {a["name"] for a in pool["properties"]["loadBalancerBackendAddresses"]} == {
        m["name"] for m in ng["properties"]["status"]["members"]} == {m["name"] for m in in_service(client, "web")}

    # A member that vanishes is replaced (maintainDesiredCount).
    gone = sorted(m["name"] for m in ng["properties"]["status"]["members"])[0]
    client.request("DELETE", client.group_path(RG, gone))
    ng = wait_until("a replacement", lambda: (n := steady(client, RG, "web", 2)()) and gone not in {
        m["name"] for m in n["properties"]["status"]["members"]} and n, timeout=60)
    assert hosts(port, 20) <= {m["name"] for m in ng["properties"]["status"]["members"]}


def test_member_whose_containers_are_killed_is_replaced(client: Client) -> None:
    put_profile(client, RG, "once", profile_body("once", restart="Never"))
    put_lb(client, RG, "oncelb", free_port())
    put_ngroup(client, RG, "once", ngroup_body(client, RG, "once", 2, pools=[pool_id(client, RG, "oncelb")]))
    ng = wait_until("2 members", steady(client, RG, "once", 2), timeout=60)
    victim = sorted(m["name"] for m in ng["properties"]["status"]["members"])[0]
    exec_sync(client, RG, victim, "web", "sh", "-c", "kill -9 -1")  # every process but the container's init
    ng = wait_until("the killed member replaced", lambda: (n := steady(client, RG, "once", 2)()) and victim not in {
        m["name"] for m in n["properties"]["status"]["members"]} and n, timeout=60)
    events = [e["name"] for e in ng["properties"]["status"]["events"]]
    assert "ReplacingMember" in events


def test_rolling_update_under_load_has_no_failed_requests_and_a_broken_one_rolls_back(client: Client) -> None:
    put_profile(client, RG, "roll", profile_body(PAGE.format(rev="v1")))
    port = free_port()
    put_lb(client, RG, "rolllb", port)
    pools = [pool_id(client, RG, "rolllb")]
    put_ngroup(client, RG, "roll", ngroup_body(client, RG, "roll", 5, pools=pools, batch=40))
    wait_until("5 members", steady(client, RG, "roll", 5, revision=1), timeout=60)

    put_profile(client, RG, "roll", profile_body(PAGE.format(rev="v2")))
    with RequestLoop(port) as loop:
        resp = put_ngroup(client, RG, "roll", ngroup_body(client, RG, "roll", 5, revision=2, pools=pools, batch=40))
        assert client.wait_operation(resp, timeout=120)["status"] == "Succeeded"
        wait_until("v2 answers only", lambda: all(fetch(port).startswith("v2-") for _ in range(10)), timeout=30)
    assert loop.failures == [], f"{len(loop.failures)} of {loop.total} requests failed: {loop.failures[:5]}"
    seen = {page.split("-")[0] for page in loop.pages}
    assert seen == {"v1", "v2"} and loop.total > 50
    ng = get_ngroup(client, RG, "roll")
    st = ng["properties"]["status"]
    assert st["currentRevision"] == 2 and st["rollout"]["state"] == "Complete"
    assert [h["revision"] for h in st["history"]] == [1, 2]

    # Revision 3's image does not exist: the rollout rolls back by itself and the service keeps serving.
    put_profile(client, RG, "roll", profile_body(PAGE.format(rev="v3"), image="127.0.0.1:9/corral/nothing:v3"))
    with RequestLoop(port) as loop:
        resp = put_ngroup(client, RG, "roll", ngroup_body(client, RG, "roll", 5, revision=3, pools=pools, batch=40))
        result = client.wait_operation(resp, timeout=120)
        assert result["status"] == "Failed" and "rolled back to revision 2" in result["error"]["message"]
        ng = wait_until("back to 5 members of revision 2", steady(client, RG, "roll", 5, revision=2), timeout=60)
    assert loop.failures == [] and set(page.split("-")[0] for page in loop.pages) == {"v2"}
    st = ng["properties"]["status"]
    assert st["rollout"]["state"] == "RolledBack" and st["currentRevision"] == 2
    assert ng["properties"]["provisioningState"] == "Failed"
    assert any(e["name"] == "RollingBack" and e["type"] == "Warning" for e in st["events"])
    assert [(h["revision"], h["result"]) for h in st["history"]][-1] == (3, "RolledBack")
    # Members that left (revision 1's, drained after the first rollout, and revision 3's) are gone soon after.
    wait_until("only members of revision 2", lambda: all(
        m["properties"]["containerGroupProfile"]["revision"] == 2 for m in members(client, RG, "roll")), timeout=30)


def test_manual_mode_keeps_members_and_in_place_rolls_the_same_groups(client: Client) -> None:
    put_profile(client, RG, "man", profile_body(PAGE.format(rev="v1")))
    put_lb(client, RG, "manlb", free_port())  # its pool drains in 1 s (without one: 5 s, the DNS TTL)
    pools = [pool_id(client, RG, "manlb")]
    put_ngroup(client, RG, "man", ngroup_body(client, RG, "man", 2, mode="Manual", pools=pools))
    first = {m["name"] for m in wait_until("2", steady(client, RG, "man", 2), timeout=60)["properties"]["status"][
        "members"]}
    put_profile(client, RG, "man", profile_body(PAGE.format(rev="v2")))
    put_ngroup(client, RG, "man", ngroup_body(client, RG, "man", 3, revision=2, mode="Manual", pools=pools))
    ng = wait_until("3 members", steady(client, RG, "man", 3), timeout=60)
    by_rev = {m["name"]: m["revision"] for m in ng["properties"]["status"]["members"]}
    assert {n for n, r in by_rev.items() if r == 1} == first and sorted(by_rev.values()) == [1, 1, 2]
    # An NGroup restart brings the old members to the NGroup's revision, in place (same groups).
    resp = client.request("POST", ngroup_path(client, RG, "man") + "/restart")
    assert resp.status_code == 202 and client.wait_operation(resp, timeout=90)["status"] == "Succeeded"
    ng = wait_until("all on revision 2", steady(client, RG, "man", 3, revision=2), timeout=60)
    assert {m["name"] for m in ng["properties"]["status"]["members"]} == set(by_rev)

    # Rolling with inPlaceUpdate: the same groups move to revision 3.
    put_profile(client, RG, "man", profile_body(PAGE.format(rev="v3")))
    put_ngroup(client, RG, "man", ngroup_body(client, RG, "man", 3, revision=3, in_place=True, batch=34, pools=pools))
    ng = wait_until("in place on revision 3", steady(client, RG, "man", 3, revision=3), timeout=90)
    assert {m["name"] for m in ng["properties"]["status"]["members"]} == set(by_rev)
    assert ng["properties"]["status"]["rollout"]["state"] == "Complete"


def test_load_balancer_probes_keep_new_connections_off_failing_backends(client: Client) -> None:
    """A pool the user fills by hand: the backend whose port is closed fails its probe and gets nothing."""
    from groups import container, group, put

    serving = put(client, RG, "good", group(container("web", ["sh", "-c", WEB_CMD.format(page="good")],
                                                      ports=[{"port": 80}])))
    silent = put(client, RG, "silent", group(container("web", ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"])))
    port = free_port()
    lb = put_lb(client, RG, "probelb", port)
    client.request("PUT", lb["properties"]["backendAddressPools"][0]["id"], json={"properties": {
        "loadBalancerBackendAddresses": [
            {"name": "good", "properties": {"ipAddress": serving["properties"]["instanceView"]["privateIp"]}},
            {"name": "silent", "properties": {"ipAddress": silent["properties"]["instanceView"]["privateIp"]}}]}})
    wait_until("only the healthy backend answers", lambda: [fetch(port, timeout=1) for _ in range(20)] == ["good"] * 20,
               timeout=30)


def test_bad_requests_are_4xx_naming_the_field_and_change_nothing(client: Client) -> None:
    from corral.cli.client import ApiError

    def refused(method: str, path: str, body: dict[str, Any]) -> ApiError:
        try:
            client.request(method, path, json=body)
        except ApiError as exc:
            return exc
        raise AssertionError(f"{method} {path} was accepted")

    put_profile(client, RG, "valid", profile_body("valid"))
    missing = refused("PUT", ngroup_path(client, RG, "bad"), ngroup_body(client, RG, "nosuchprofile", 1))
    assert missing.status == 400 and "nosuchprofile" in missing.message
    body = ngroup_body(client, RG, "valid", 1, pools=[pool_id(client, RG, "nolb")])
    assert "load balancer 'nolb'" in refused("PUT", ngroup_path(client, RG, "bad"), body).message
    long_prefix = ngroup_body(client, RG, "valid", 1, prefix="p" * 40)
    assert "would not be valid" in refused("PUT", ngroup_path(client, RG, "bad"), long_prefix).message
    negative = ngroup_body(client, RG, "valid", -1)
    assert "desiredCount" in refused("PUT", ngroup_path(client, RG, "bad"), negative).message
    instant = refused("PUT", ngroup_path(client, RG, "bad"), ngroup_body(client, RG, "valid", 1,
                                                                         batchReadyTimeout="PT0S"))
    assert instant.status == 400 and "rollingUpdateProfile.batchReadyTimeout" in instant.message
    assert "bad" not in {ng["name"] for ng in client.request("GET", f"{rg_path(client, RG)}/ngroups").json()["value"]}
    no_containers = refused("PUT", f"{rg_path(client, RG)}/containerGroupProfiles/empty",
                            {"location": "local", "properties": {"containers": []}})
    assert no_containers.status == 400 and "containers" in no_containers.message
    lb = f"{rg_path(client, RG, 'Microsoft.Network')}/loadBalancers/badlb"
    rule = refused("PUT", lb, {"location": "local", "properties": {
        "frontendIPConfigurations": [{"name": "fe"}], "loadBalancingRules": [{"name": "r", "properties": {
            "frontendIPConfiguration": {"id": f"{lb}/frontendIPConfigurations/fe"},
            "backendAddressPool": {"id": f"{lb}/backendAddressPools/none"}, "frontendPort": 80}}]}})
    assert rule.status == 400 and "no backendAddressPool 'none'" in rule.message
    pool = f"{rg_path(client, RG, 'Microsoft.StandbyPool')}/standbyContainerGroupPools/badpool"
    assert refused("PUT", pool, {"location": "local", "properties": {
        "elasticityProfile": {"maxReadyCapacity": 1},
        "containerGroupProperties": {"containerGroupProfile": {"id": "/not/a/profile"}}}}).status == 400
    put_ngroup(client, RG, "uses", ngroup_body(client, RG, "valid", 0))
    endless = refused("PATCH", ngroup_path(client, RG, "uses"), {"properties": {"updateProfile": {
        "drainPeriod": "PT2H"}}})
    assert endless.status == 400 and "updateProfile.drainPeriod" in endless.message and "3600" in endless.message
    assert "drainPeriod" not in get_ngroup(client, RG, "uses")["properties"]["updateProfile"]
    in_use = refused("DELETE", f"{rg_path(client, RG)}/containerGroupProfiles/valid", {})
    assert in_use.status == 409 and "NGroup 'uses'" in in_use.message
