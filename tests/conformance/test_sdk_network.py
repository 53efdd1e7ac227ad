"""The official azure-mgmt-network SDK against Corral: vnet, subnet, NSG with a rule, list, delete;
peerings and route tables."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network.models import (
    AddressSpace,
    Delegation,
    NetworkSecurityGroup,
    Route,
    RouteTable,
    SecurityRule,
    Subnet,
    SubResource,
    VirtualNetwork,
    VirtualNetworkPeering,
)
from conftest import CorralToken  # type: ignore[import-not-found]

RG = "sdknet"


@pytest.fixture(scope="module")
def net(corral) -> Iterator[NetworkManagementClient]:  # type: ignore[no-untyped-def]
    cfg = corral.config
    client = NetworkManagementClient(
        CorralToken(cfg.token), cfg.subscription, base_url=cfg.endpoint,
        connection_verify=cfg.ca_cert, polling_interval=1, retry_total=0,
    )
    try:
        yield client
    finally:
        for name in ("sdk-vnet", "sdk-pa", "sdk-pb"):
            try:
                client.virtual_networks.begin_delete(RG, name).result()
            except HttpResponseError:
                pass
        try:
            client.network_security_groups.begin_delete(RG, "sdk-nsg").result()
        except HttpResponseError:
            pass


def test_vnet_subnet_nsg_rule(net: NetworkManagementClient) -> None:
    nsg = net.network_security_groups.begin_create_or_update(RG, "sdk-nsg", NetworkSecurityGroup(
        location="local")).result()
    assert nsg.provisioning_state == "Succeeded" and nsg.name == "sdk-nsg"
    rule = net.security_rules.begin_create_or_update(RG, "sdk-nsg", "allow-web", SecurityRule(
        priority=200, direction="Inbound", access="Allow", protocol="Tcp", source_address_prefix="*",
        source_port_range="*", destination_address_prefix="*", destination_port_ranges=["80", "443"])).result()
    assert rule.priority == 200 and rule.destination_port_ranges == ["80", "443"]

    vnet = net.virtual_networks.begin_create_or_update(RG, "sdk-vnet", VirtualNetwork(
        location="local", address_space=AddressSpace(address_prefixes=["10.70.0.0/16"]))).result()
    assert vnet.provisioning_state == "Succeeded"
    assert vnet.address_space.address_prefixes == ["10.70.0.0/16"]
    subnet = net.subnets.begin_create_or_update(RG, "sdk-vnet", "apps", Subnet(
        address_prefix="10.70.1.0/24", network_security_group=NetworkSecurityGroup(id=nsg.id),
        delegations=[Delegation(name="aci", service_name="Microsoft.ContainerInstance/containerGroups")])).result()
    assert subnet.address_prefix == "10.70.1.0/24"
    assert subnet.network_security_group.id == nsg.id
    assert subnet.delegations[0].service_name == "Microsoft.ContainerInstance/containerGroups"

    assert [v.name for v in net.virtual_networks.list(RG)] == ["sdk-vnet"]
    assert "sdk-vnet" in [v.name for v in net.virtual_networks.list_all()]
    assert [s.name for s in net.subnets.list(RG, "sdk-vnet")] == ["apps"]
    assert [n.name for n in net.network_security_groups.list(RG)] == ["sdk-nsg"]
    assert [r.name for r in net.security_rules.list(RG, "sdk-nsg")] == ["allow-web"]
    got = net.network_security_groups.get(RG, "sdk-nsg")
    assert [s.id for s in got.subnets] == [subnet.id]
    assert len(got.default_security_rules) == 6

    with pytest.raises(HttpResponseError) as exc:  # the NSG is attached to the subnet
        net.network_security_groups.begin_delete(RG, "sdk-nsg").result()
    assert exc.value.status_code == 409

    net.security_rules.begin_delete(RG, "sdk-nsg", "allow-web").result()
    net.subnets.begin_delete(RG, "sdk-vnet", "apps").result()
    with pytest.raises(ResourceNotFoundError):
        net.subnets.get(RG, "sdk-vnet", "apps")
    net.virtual_networks.begin_delete(RG, "sdk-vnet").result()
    net.network_security_groups.begin_delete(RG, "sdk-nsg").result()
    with pytest.raises(ResourceNotFoundError):
        net.virtual_networks.get(RG, "sdk-vnet")


def test_peering_and_route_table(net: NetworkManagementClient) -> None:
    a, b = (net.virtual_networks.begin_create_or_update(RG, name, VirtualNetwork(
        location="local", address_space=AddressSpace(address_prefixes=[prefix]))).result()
        for name, prefix in (("sdk-pa", "10.233.0.0/16"), ("sdk-pb", "10.234.0.0/16")))
    p = net.virtual_network_peerings.begin_create_or_update(RG, "sdk-pa", "a-b", VirtualNetworkPeering(
        remote_virtual_network=SubResource(id=b.id), allow_virtual_network_access=True)).result()
    assert p.peering_state == "Initiated" and p.remote_address_space.address_prefixes == ["10.234.0.0/16"]
    net.virtual_network_peerings.begin_create_or_update(RG, "sdk-pb", "b-a", VirtualNetworkPeering(
        remote_virtual_network=SubResource(id=a.id))).result()
    assert net.virtual_network_peerings.get(RG, "sdk-pa", "a-b").peering_state == "Connected"
    assert [x.name for x in net.virtual_network_peerings.list(RG, "sdk-pb")] == ["b-a"]
    assert net.virtual_networks.get(RG, "sdk-pa").virtual_network_peerings[0].peering_state == "Connected"

    rt = net.route_tables.begin_create_or_update(RG, "sdk-rt", RouteTable(location="local", routes=[
        Route(name="drop", address_prefix="10.235.0.0/16", next_hop_type="None")])).result()
    assert rt.routes[0].next_hop_type == "None"
    r = net.routes.begin_create_or_update(RG, "sdk-rt", "fw", Route(
        address_prefix="10.236.0.0/16", next_hop_type="VirtualAppliance", next_hop_ip_address="10.233.0.4")).result()
    assert r.next_hop_ip_address == "10.233.0.4"
    sn = net.subnets.begin_create_or_update(RG, "sdk-pa", "apps", Subnet(
        address_prefix="10.233.0.0/24", route_table=RouteTable(id=rt.id))).result()
    assert sn.route_table.id == rt.id
    assert [s.id for s in net.route_tables.get(RG, "sdk-rt").subnets] == [sn.id]
    with pytest.raises(HttpResponseError) as busy:
        net.route_tables.begin_delete(RG, "sdk-rt").result()
    assert busy.value.error.code == "InUseRouteTableCannotBeDeleted"

    net.virtual_network_peerings.begin_delete(RG, "sdk-pb", "b-a").result()
    assert net.virtual_network_peerings.get(RG, "sdk-pa", "a-b").peering_state == "Disconnected"
    net.virtual_networks.begin_delete(RG, "sdk-pa").result()
    net.route_tables.begin_delete(RG, "sdk-rt").result()
    with pytest.raises(ResourceNotFoundError):
        net.route_tables.get(RG, "sdk-rt")
