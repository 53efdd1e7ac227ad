"""The official SDKs against Corral's orchestration resources.

* azure-mgmt-network drives a load balancer (frontend, pool, rule, probe; a pool's own PUT; If-Match);
* azure-mgmt-containerinstance 10.2.0b2, in its own virtualenv (``make aci-preview``: the project's
  tests keep 10.1.0), drives profiles with revisions and an NGroup behind that load balancer:
  create, scale (PATCH), roll to a new revision, stop/start/restart, a group made from a profile,
  delete (tests/sdk_preview/ngroups_flow.py);
* azure-mgmt-standbypool 2.1.0 drives a standby pool and its runtime view.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import (
    BackendAddressPool,
    FrontendIPConfiguration,
    LoadBalancer,
    LoadBalancerBackendAddress,
    LoadBalancingRule,
    Probe,
    SubResource,
)
from azure.mgmt.standbypool import StandbyPoolMgmtClient
from azure.mgmt.standbypool import models as sp
from conftest import CorralToken  # type: ignore[import-not-found]
from corral_server import free_port
from orchestration import profile_body, profile_id, put_profile, rg_path, wait_until

RG = "corsdk"
PREVIEW = Path(__file__).parents[2] / ".venv-aci-preview" / "bin" / "python"
FLOW = Path(__file__).parents[1] / "sdk_preview" / "ngroups_flow.py"


def _client(cls, corral):  # type: ignore[no-untyped-def]
    cfg = corral.config
    return cls(CorralToken(cfg.token), cfg.subscription, base_url=cfg.endpoint, connection_verify=cfg.ca_cert,
               polling_interval=1, retry_total=0)


@pytest.fixture(scope="module")
def net(corral) -> Iterator[NetworkManagementClient]:  # type: ignore[no-untyped-def]
    client = _client(NetworkManagementClient, corral)
    try:
        yield client
    finally:
        try:
            client.load_balancers.begin_delete(RG, "sdklb").result()
        except HttpResponseError:
            pass


def lb_model(sub: str, port: int) -> LoadBalancer:
    lb = f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.Network/loadBalancers/sdklb"
    return LoadBalancer(
        location="local",
        frontend_ip_configurations=[FrontendIPConfiguration(name="fe")],
        backend_address_pools=[BackendAddressPool(name="web", drain_period_in_seconds=1)],
        probes=[Probe(name="http", protocol="Http", port=80, request_path="/")],
        load_balancing_rules=[LoadBalancingRule(
            name="http", protocol="Tcp", frontend_port=port, backend_port=80,
            frontend_ip_configuration=SubResource(id=f"{lb}/frontendIPConfigurations/fe"),
            backend_address_pool=SubResource(id=f"{lb}/backendAddressPools/web"),
            probe=SubResource(id=f"{lb}/probes/http"))])


def test_load_balancer_sdk_and_preview_aci_sdk_drive_profiles_and_ngroups(corral, net) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    lb = net.load_balancers.begin_create_or_update(RG, "sdklb", lb_model(corral.config.subscription, port)
                                                   ).result()
    assert lb.provisioning_state == "Succeeded" and lb.load_balancing_rules[0].frontend_port == port
    assert lb.frontend_ip_configurations[0].load_balancing_rules[0].id.endswith("/loadBalancingRules/http")
    # A pool's own PUT keeps the rest; a stale etag is refused (412), nothing is lost.
    pool = net.load_balancer_backend_address_pools.begin_create_or_update(RG, "sdklb", "manual", BackendAddressPool(
        load_balancer_backend_addresses=[LoadBalancerBackendAddress(name="a", ip_address="10.9.9.9")])).result()
    assert pool.load_balancer_backend_addresses[0].ip_address == "10.9.9.9"
    assert [p.name for p in net.load_balancers.get(RG, "sdklb").backend_address_pools] == ["web", "manual"]
    with pytest.raises(HttpResponseError) as stale:
        net.load_balancers.begin_create_or_update(RG, "sdklb", lb_model(corral.config.subscription, port),
                                                  headers={"If-Match": lb.etag}).result()
    assert stale.value.status_code == 412
    net.load_balancer_backend_address_pools.begin_delete(RG, "sdklb", "manual").result()
    assert [p.name for p in net.load_balancers.get(RG, "sdklb").backend_address_pools] == ["web"]

    if not PREVIEW.exists():
        pytest.skip(f"azure-mgmt-containerinstance 10.2.0b2 is not installed at {PREVIEW} (`make aci-preview`)")
    pool_id = f"{lb.id}/backendAddressPools/web"
    res = subprocess.run([str(PREVIEW), str(FLOW), str(corral.config_path), RG, pool_id], capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout)
    assert out["revisions"] == [1, 1, 2] and out["registered"] == [1, 2] and out["listed_revisions"] == [1, 2]
    assert "echo v1" in out["revision1_command"]
    assert out["profiles_in_rg"] == ["web"] and out["profiles_in_sub"] and out["profile_tags"] == {"team": "web"}
    assert out["created_state"] == "Succeeded" and out["created_count"] == 2 and out["members"] == 2
    assert out["ngroups_in_rg"] == ["sdkng"] and out["ngroups_in_sub"]
    assert out["patched_count"] == 3 and out["patched_state"] == "Succeeded" and out["members_after_patch"] == 3
    assert out["rolled_state"] == "Succeeded" and out["member_revisions"] == [2]
    assert out["after_restart"] == "Succeeded"
    assert out["single_revision"] == 1 and "echo v1" in out["single_command"]
    assert out["members_after_delete"] == 0 and out["profiles_after_delete"] == []


def test_standby_pool_sdk(corral) -> None:  # type: ignore[no-untyped-def]
    client = corral.client()
    put_profile(client, RG, "pooled", profile_body("pooled"))
    pools = _client(StandbyPoolMgmtClient, corral)
    resource = sp.StandbyContainerGroupPoolResource(
        location="local", properties=sp.StandbyContainerGroupPoolResourceProperties(
            elasticity_profile=sp.StandbyContainerGroupPoolElasticityProfile(max_ready_capacity=2,
                                                                             refill_policy="always"),
            container_group_properties=sp.ContainerGroupProperties(container_group_profile=sp.ContainerGroupProfile(
                id=profile_id(client, RG, "pooled"), revision=1))))
    pool = pools.standby_container_group_pools.begin_create_or_update(RG, "sdkpool", resource).result()
    try:
        assert pool.properties.provisioning_state == "Succeeded"
        assert [p.name for p in pools.standby_container_group_pools.list_by_resource_group(RG)] == ["sdkpool"]

        def ready() -> object:
            view = pools.standby_container_group_pool_runtime_views.get(RG, "sdkpool", "latest")
            counts = {c.state: c.count for c in view.properties.instance_count_summary[0].instance_counts_by_state}
            return counts if counts.get("Running") == 2 else None
        assert wait_until("2 ready pooled groups", ready, timeout=60)["Creating"] == 0  # type: ignore[index]
        updated = pools.standby_container_group_pools.update(RG, "sdkpool", sp.StandbyContainerGroupPoolResourceUpdate(
            properties=sp.StandbyContainerGroupPoolResourceUpdateProperties(
                elasticity_profile=sp.StandbyContainerGroupPoolElasticityProfile(max_ready_capacity=1))))
        assert updated.properties.elasticity_profile.max_ready_capacity == 1
        wait_until("the pool shrinks to 1", lambda: len(_pooled(client)) == 1, timeout=30)
    finally:
        pools.standby_container_group_pools.begin_delete(RG, "sdkpool").result()
    with pytest.raises(ResourceNotFoundError):
        pools.standby_container_group_pools.get(RG, "sdkpool")
    wait_until("the pool's groups are gone", lambda: not _pooled(client), timeout=30)
    client.request("DELETE", f"{rg_path(client, RG)}/containerGroupProfiles/pooled")


def _pooled(client) -> list[str]:  # type: ignore[no-untyped-def]
    groups = client.request("GET", client.group_path(RG)).json()["value"]
    return [g["name"] for g in groups if (g.get("tags") or {}).get("corral-standby-pool")
            and g["properties"]["provisioningState"] != "Deleting"]

