"""Orchestration models and pure helpers: profile merging, durations, member names, LB rules, DNS names."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from corral.model.lb import LoadBalancer, NodeLbBackend, NodeLbRule
from corral.model.ngroup import NGroupSpec, check_member_prefix, parse_duration
from corral.model.profile import merge_properties
from corral.net.dns.index import DnsIndex
from corral.node.loadbalancer import render

PROFILE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroupProfiles/p"
POOL = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/loadBalancers/lb/backendAddressPools/web"


def test_merge_properties_overrides_containers_by_name_and_volumes_by_name() -> None:
    template = {"containers": [{"name": "web", "properties": {"image": "a", "command": ["x"]}}],
                "volumes": [{"name": "v", "emptyDir": {}}], "restartPolicy": "Always", "revision": 3}
    merged = merge_properties(template, {
        "containers": [{"name": "web", "properties": {"volumeMounts": [{"name": "f", "mountPath": "/f"}]}}],
        "volumes": [{"name": "f", "azureFile": {"shareName": "s", "storageAccountName": "a"}}],
        "subnetIds": [{"id": "x"}]})
    assert merged["containers"][0]["properties"] == {"image": "a", "command": ["x"],
                                                     "volumeMounts": [{"name": "f", "mountPath": "/f"}]}
    assert [v["name"] for v in merged["volumes"]] == ["v", "f"] and merged["subnetIds"] == [{"id": "x"}]
    assert "revision" not in merged and template["containers"][0]["properties"] == {"image": "a", "command": ["x"]}
    with pytest.raises(ValueError, match="container 'db' is not in the container group profile"):
        merge_properties(template, {"containers": [{"name": "a"}, {"name": "db", "properties": {}}]})
    # As az sends it: a container named after the group, no image, default resources, an empty config map.
    az = merge_properties(template, {"containers": [{"name": "grp", "properties": {
        "image": None, "resources": {"requests": {"cpu": 1.0}}, "configMap": {"keyValuePairs": {}},
        "environmentVariables": [{"name": "A", "value": "1"}]}}]})
    assert az["containers"][0] == {"name": "web", "properties": {
        "image": "a", "command": ["x"], "environmentVariables": [{"name": "A", "value": "1"}]}}


def test_durations() -> None:
    assert parse_duration("PT30S", "f") == 30 and parse_duration("PT1M30S", "f") == 90
    assert parse_duration("P1DT1H", "f") == 90000 and parse_duration(5, "f") == 5 and parse_duration(None, "f") == 0
    with pytest.raises(ValueError, match="not an ISO 8601 duration"):
        parse_duration("soon", "pauseTimeBetweenBatches")


def ngroup(**elastic: object) -> NGroupSpec:
    return NGroupSpec.model_validate({"properties": {
        "elasticProfile": {"desiredCount": 2, **elastic},
        "containerGroupProfiles": [{"resource": {"id": PROFILE}, "networkProfile": {
            "loadBalancer": {"backendAddressPools": [{"resource": {"id": POOL}}]}}}],
        "updateProfile": {"updateMode": "rolling", "rollingUpdateProfile": {"maxBatchPercent": 30}}}})


def test_ngroup_spec_checks_references_names_and_autoscale() -> None:
    spec = ngroup()
    assert spec.properties.updateProfile.updateMode == "Rolling" and spec.properties.rolling.automaticRollback
    assert spec.properties.profile.pool_ids() == [POOL]
    check_member_prefix("web", spec)
    with pytest.raises(ValueError, match="would not be valid"):
        check_member_prefix("web", ngroup(containerGroupNamingPolicy={"guidNamingPolicy": {"prefix": "x" * 30}}))
    with pytest.raises(ValidationError, match="minCount 3 is greater than maxCount 2"):
        ngroup(autoscale={"minCount": 3, "maxCount": 2, "targetCpuUtilizationPercent": 50})
    with pytest.raises(ValidationError, match="targetCpuUtilizationPercent and/or"):
        ngroup(autoscale={"minCount": 1, "maxCount": 2})
    with pytest.raises(ValidationError, match="is not a Microsoft.ContainerInstance/containerGroupProfiles id"):
        NGroupSpec.model_validate({"properties": {"containerGroupProfiles": [{"resource": {"id": "/nope"}}]}})


def test_rollout_timers_are_validated_field_by_field() -> None:
    def spec(update: dict[str, object]) -> NGroupSpec:
        return NGroupSpec.model_validate({"properties": {"containerGroupProfiles": [{"resource": {"id": PROFILE}}],
                                                         "updateProfile": update}})
    up = spec({"drainPeriod": "PT3S", "rollingUpdateProfile": {"batchReadyTimeout": 30}}).properties
    assert up.updateProfile.drain == 3 and up.rolling.ready_timeout == 30
    assert spec({}).properties.updateProfile.drain is None and spec({}).properties.rolling.ready_timeout == 120
    for update, field, why in [
            ({"drainPeriod": "PT2H"}, "drainPeriod", "longer than 3600 s"),
            ({"drainPeriod": "soon"}, "drainPeriod", "not an ISO 8601 duration"),
            ({"rollingUpdateProfile": {"batchReadyTimeout": "PT0S"}}, "batchReadyTimeout", "shorter than 1 s"),
            ({"rollingUpdateProfile": {"pauseTimeBetweenBatches": "P2D"}}, "pauseTimeBetweenBatches", "longer")]:
        with pytest.raises(ValidationError) as err:
            spec(update)
        assert err.value.errors()[0]["loc"][-1] == field and why in str(err.value), err.value


def test_load_balancer_model_normalises_case_and_checks_addresses() -> None:
    lb = LoadBalancer.model_validate({"properties": {"loadBalancingRules": [{"name": "r", "properties": {
        "frontendIPConfiguration": {"id": "f"}, "protocol": "tcp", "frontendPort": 80}}],
        "probes": [{"name": "p", "properties": {"protocol": "http", "port": 80}}]}})
    assert lb.properties.loadBalancingRules[0].properties.protocol == "Tcp"
    assert lb.properties.probes[0].properties.protocol == "Http"
    with pytest.raises(ValidationError, match="is not an IPv4 address"):
        LoadBalancer.model_validate({"properties": {"backendAddressPools": [{"name": "p", "properties": {
            "loadBalancerBackendAddresses": [{"name": "a", "properties": {"ipAddress": "10.0.0.300"}}]}}]}})


def test_node_rules_balance_at_random_and_snat_to_the_gateway() -> None:
    rule = NodeLbRule(id="lb/r/tcp", protocol="tcp", frontendIp=None, frontendPort=8080, backends=[
        NodeLbBackend(ip="10.1.0.2", port=80, snat="10.1.0.1"), NodeLbBackend(ip="10.1.0.3", port=80),
        NodeLbBackend(ip="10.1.0.4", port=80)])
    vip = NodeLbRule(id="lb/v/tcp", protocol="tcp", frontendIp="10.1.255.254", frontendPort=80, backends=[])
    text = render("abc123", [rule, vip], existing=[":CORLB-abc123-deadbeef - [0:0]"])
    lines = text.splitlines()
    dnat = [line for line in lines if "DNAT" in line]
    assert ["probability 0.33333333" in dnat[0], "probability 0.50000000" in dnat[1], "statistic" not in dnat[2]] == [
        True, True, True]
    assert any("--dst-type LOCAL" in line and "--dport 8080" in line for line in lines)
    assert any("SNAT --to-source 10.1.0.1" in line for line in lines)
    assert any("-d 10.1.0.3/32" in line and "MASQUERADE" in line for line in lines)
    assert not any("10.1.255.254" in line for line in lines)  # no backends: no rule, the port stays closed
    assert "-X CORLB-abc123-deadbeef" in lines  # a chain no rule names any more goes
    assert "-I PREROUTING 1 -j CORLB-abc123" in lines and "-I POSTROUTING 1 -j CORLB-abc123-P" in lines
    again = render("abc123", [rule], existing=["-A PREROUTING -j CORLB-abc123", "-A OUTPUT -j CORLB-abc123",
                                               "-A POSTROUTING -j CORLB-abc123-P"])
    assert "-I PREROUTING" not in again  # the jumps are added once


def test_all_probed_up_keeps_a_rule_whose_backends_all_fail_its_probe(tmp_path: Path) -> None:
    import socket
    import time

    from corral.model.lb import NodeLbProbe
    from corral.node.loadbalancer import LoadBalancerRules

    with socket.socket() as s:  # a port nothing listens on: a TCP probe of it fails at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    lbs = LoadBalancerRules(tmp_path)
    try:
        for up in (False, True):
            probe = NodeLbProbe(protocol="Tcp", port=closed, interval=1, timeout=1, allProbedUp=up)
            rule = NodeLbRule(id=f"lb/r{up}/tcp", protocol="tcp", frontendIp=None, frontendPort=8080, probe=probe,
                              backends=[NodeLbBackend(ip="127.0.0.1", port=closed)])
            lbs.health.watch([rule])
            deadline = time.monotonic() + 10
            while lbs.health.healthy("127.0.0.1", probe) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not lbs.health.healthy("127.0.0.1", probe)
            assert lbs._healthy(rule) == (rule.backends if up else [])
    finally:
        lbs.stop()
        lbs.teardown()  # a health change re-applied the (empty) rules to the host's nat table


def test_dns_names_of_an_ngroup_resolve_to_its_members_in_service() -> None:
    idx = DnsIndex("corral.local")
    record = {"meta": {"name": "Web", "resourceGroup": "Shop"}, "status": {"members": [
        {"name": "a", "ip": "10.0.0.2", "inService": True}, {"name": "b", "ip": "10.0.0.3", "inService": False}]}}
    idx.apply("/ngroups/s/shop/web", record)
    assert idx.lookup("web.shop.corral.local") == ["10.0.0.2"]
    idx.apply("/ngroups/s/shop/web", {**record, "meta": {**record["meta"], "deleting": True}})
    assert idx.lookup("web.shop.corral.local") == []
    idx.apply("/ngroups/s/shop/web", record)
    idx.apply("/ngroups/s/shop/web", None)
    assert idx.lookup("web.shop.corral.local") == []


def test_a_member_waiting_for_room_on_a_node_has_not_failed() -> None:
    from corral.orchestrator.members import parse_member

    def group(state: str, prov: str, event: str) -> dict[str, object]:
        return {"name": "m", "id": "/subscriptions/s/resourceGroups/rg/providers/x/containerGroups/m", "tags": {},
                "properties": {"provisioningState": prov, "containers": [], "instanceView": {
                    "state": state, "events": [{"name": event, "message": "0/1 nodes are available"}]}}}
    assert not parse_member(group("Pending", "Failed", "FailedScheduling")).failed
    assert parse_member(group("Pending", "Failed", "Failed")).failed  # an image that cannot be pulled
    assert parse_member(group("Failed", "Succeeded", "Failed")).failed
