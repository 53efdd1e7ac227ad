"""Drive profiles and NGroups with azure-mgmt-containerinstance 10.2.0b2 (run in its own virtualenv).

The project's tests keep 10.1.0; this script runs under .venv-aci-preview (made by `make aci-preview`)
and prints one JSON document of what it saw, which tests/conformance/test_sdk_orchestration.py checks.
Usage: ngroups_flow.py CONFIG.json RESOURCE_GROUP POOL_ID
"""

from __future__ import annotations

import json
import sys
import time

from azure.core.credentials import AccessToken
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerinstance import models as m


class Token:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


def container(page: str) -> m.Container:
    return m.Container(name="web", properties=m.ContainerProperties(
        image="corral/busybox:latest",
        command=["sh", "-c", f"mkdir -p /www && echo {page} > /www/index.html && trap 'exit 0' TERM; "
                 "httpd -f -p 80 -h /www & wait"],
        ports=[m.ContainerPort(port=80)],
        resources=m.ResourceRequirements(requests=m.ResourceRequests(cpu=0.1, memory_in_gb=0.1)),
        readiness_probe=m.ContainerProbe(http_get=m.ContainerHttpGet(path="/", port=80), period_seconds=1)))


def profile(page: str) -> m.ContainerGroupProfile:
    return m.ContainerGroupProfile(location="local", properties=m.ContainerGroupProfileProperties(
        containers=[container(page)], os_type="Linux", restart_policy="Always"))


def main() -> None:
    cfg = json.load(open(sys.argv[1]))
    rg, pool = sys.argv[2], sys.argv[3]
    aci = ContainerInstanceManagementClient(Token(cfg["token"]), cfg["subscription"], base_url=cfg["endpoint"],
                                            connection_verify=cfg["ca_cert"], polling_interval=1, retry_total=0)
    out: dict[str, object] = {}
    p1 = aci.cg_profile.create_or_update(rg, "web", profile("v1"))
    again = aci.cg_profile.create_or_update(rg, "web", profile("v1"))
    p2 = aci.cg_profile.create_or_update(rg, "web", profile("v2"))
    out["revisions"] = [p1.properties.revision, again.properties.revision, p2.properties.revision]
    out["registered"] = p2.properties.registered_revisions
    out["listed_revisions"] = [r.properties.revision for r in aci.cg_profile.list_all_revisions(rg, "web")]
    r1 = aci.cg_profile.get_by_revision_number(rg, "web", "1")
    out["revision1_command"] = r1.properties.containers[0].properties.command[-1]
    out["profiles_in_rg"] = [p.name for p in aci.cg_profiles.list_by_resource_group(rg)]
    out["profiles_in_sub"] = "web" in [p.name for p in aci.cg_profiles.list_by_subscription()]
    tagged = aci.cg_profile.update(rg, "web", m.ContainerGroupProfilePatch(tags={"team": "web"}))
    out["profile_tags"] = tagged.tags
    stub = m.ContainerGroupProfileStub(
        resource=m.ApiEntityReference(id=p1.id), revision=1,
        network_profile=m.NetworkProfile(load_balancer=m.LoadBalancer(backend_address_pools=[
            m.LoadBalancerBackendAddressPool(resource=m.ApiEntityReference(id=pool))])))
    ng = m.NGroup(location="local", properties=m.NGroupProperties(
        elastic_profile=m.ElasticProfile(
            desired_count=2, maintain_desired_count=True,
            container_group_naming_policy=m.ElasticProfileContainerGroupNamingPolicy(
                guid_naming_policy=m.ElasticProfileContainerGroupNamingPolicyGuidNamingPolicy(prefix="sdk-"))),
        container_group_profiles=[stub],
        update_profile=m.UpdateProfile(
            update_mode="Rolling", rolling_update_profile=m.UpdateProfileRollingUpdateProfile(
                max_batch_percent=50, max_unhealthy_percent=50, pause_time_between_batches="PT0S",
                in_place_update=False))))
    created = aci.ngroups.begin_create_or_update(rg, "sdkng", ng).result()
    out["created_state"] = created.properties.provisioning_state
    out["created_count"] = created.properties.elastic_profile.desired_count
    out["ngroups_in_rg"] = [n.name for n in aci.ngroups.list_by_resource_group(rg)]
    out["ngroups_in_sub"] = "sdkng" in [n.name for n in aci.ngroups.list()]
    members = [g for g in aci.container_groups.list_by_resource_group(rg) if g.name.startswith("sdk-")]
    out["members"] = len(members)
    patched = aci.ngroups.begin_update(rg, "sdkng", m.NGroupPatch(properties=m.NGroupProperties(
        elastic_profile=m.ElasticProfile(desired_count=3, maintain_desired_count=True)))).result()
    out["patched_count"] = patched.properties.elastic_profile.desired_count
    out["patched_state"] = patched.properties.provisioning_state
    out["members_after_patch"] = len([g for g in aci.container_groups.list_by_resource_group(rg)
                                      if g.name.startswith("sdk-")])
    rolled = aci.ngroups.begin_create_or_update(rg, "sdkng", m.NGroup(location="local", properties=m.NGroupProperties(
        elastic_profile=m.ElasticProfile(
            desired_count=3, maintain_desired_count=True,
            container_group_naming_policy=ng.properties.elastic_profile.container_group_naming_policy),
        container_group_profiles=[m.ContainerGroupProfileStub(resource=stub.resource, revision=2,
                                                              network_profile=stub.network_profile)],
        update_profile=ng.properties.update_profile))).result()
    out["rolled_state"] = rolled.properties.provisioning_state
    out["member_revisions"] = sorted({g.properties.container_group_profile.revision
                                      for g in aci.container_groups.list_by_resource_group(rg)
                                      if g.name.startswith("sdk-") and g.properties.provisioning_state != "Deleting"})
    aci.ngroups.stop(rg, "sdkng")
    aci.ngroups.begin_start(rg, "sdkng").result()
    aci.ngroups.begin_restart(rg, "sdkng").result()
    out["after_restart"] = aci.ngroups.get(rg, "sdkng").properties.provisioning_state
    single = aci.container_groups.begin_create_or_update(rg, "from-profile", m.ContainerGroup(
        location="local", properties=m.ContainerGroupProperties(
            container_group_profile=m.ContainerGroupProfileReferenceDefinition(id=p1.id, revision=1)))).result()
    out["single_revision"] = single.properties.container_group_profile.revision
    out["single_command"] = single.properties.containers[0].properties.command[-1]
    aci.container_groups.begin_delete(rg, "from-profile").result()
    aci.ngroups.begin_delete(rg, "sdkng").result()
    out["members_after_delete"] = len([g for g in aci.container_groups.list_by_resource_group(rg)
                                       if g.name.startswith("sdk-")])
    aci.cg_profile.delete(rg, "web")
    out["profiles_after_delete"] = [p.name for p in aci.cg_profiles.list_by_resource_group(rg)]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
