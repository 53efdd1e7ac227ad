"""ARM routes of ``Microsoft.Network``: virtual networks, subnets, network security groups and rules.

Every change is carried out before the answer (the store write is the whole
operation), so PUT answers 200/201 with ``provisioningState: Succeeded``; the
LRO headers point at an operation that already reports Succeeded, which keeps
clients that always poll (the Azure SDK's ARM poller) on their fast path.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.api.lro import RETRY_AFTER
from corral.control import netkeys as K
from corral.control.netplane import NetworkControl
from corral.errors import NotFound
from corral.model.network import (
    ACI_DELEGATION,
    NetworkSecurityGroup,
    NodeBlocks,
    NsgRecord,
    RuleRecord,
    SecurityRule,
    Subnet,
    SubnetRecord,
    VirtualNetwork,
    VnetRecord,
)

router = APIRouter(dependencies=[Depends(api_version)])

SUBP = "/subscriptions/{sub}/providers/Microsoft.Network"
RGP = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network"
VN = RGP + "/virtualNetworks"
SN = VN + "/{vnet}/subnets"
NSG = RGP + "/networkSecurityGroups"
RULE = NSG + "/{nsg}/securityRules"


async def network(request: Request) -> NetworkControl:  # async: no thread-pool hand-off (deps.py)
    return request.app.state.plane.network


# ---- rendering -----------------------------------------------------------------------


def _etag(uid: str, version: int) -> str:
    return f'W/"{uid}-{version}"'


def render_subnet(v: VnetRecord, sn: SubnetRecord, version: int, blocks: NodeBlocks | None = None) -> dict[str, Any]:
    m = v.meta
    sid = K.subnet_id(m.subscription, m.resourceGroup, m.name, sn.name)
    props = sn.properties.model_dump(mode="json", exclude_none=True)
    props["delegations"] = [
        {"id": f"{sid}/delegations/{d.name or 'aci'}", "name": d.name or "aci",
         "type": "Microsoft.Network/virtualNetworks/subnets/delegations",
         "properties": {"serviceName": ACI_DELEGATION, "provisioningState": "Succeeded",
                        "actions": ["Microsoft.Network/virtualNetworks/subnets/action"]}}
        for d in sn.properties.delegations or []
    ]
    props["provisioningState"] = "Succeeded"
    if blocks is not None:
        # Corral extension: the address block each node was granted out of this subnet.
        props["nodeAddressBlocks"] = dict(sorted(blocks.blocks.get(sn.name.lower(), {}).items()))
    return {"id": sid, "name": sn.name, "type": K.SUBNET_TYPE, "etag": _etag(sn.uid, version), "properties": props}


def render_vnet(v: VnetRecord, version: int, blocks: NodeBlocks | None = None,
                peerings: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    m = v.meta
    props: dict[str, Any] = {
        **v.extra,
        "addressSpace": v.addressSpace.model_dump(mode="json"),
        "subnets": [render_subnet(v, s, version, blocks) for s in sorted(v.subnets.values(), key=lambda s: s.name)],
        "virtualNetworkPeerings": peerings or [],
        "enableDdosProtection": False,
        "resourceGuid": m.uid,
        "provisioningState": "Succeeded",
    }
    return {"id": K.vnet_id(m.subscription, m.resourceGroup, m.name), "name": m.name, "type": K.VNET_TYPE,
            "location": v.location, "tags": v.tags or {}, "etag": _etag(m.uid, version), "properties": props}


# The rules every Azure NSG has after the user's (priority 65000+); Corral's nodes behave the same way.
DEFAULT_RULES = [
    ("AllowVnetInBound", 65000, "Inbound", "Allow", "VirtualNetwork", "VirtualNetwork"),
    ("AllowAzureLoadBalancerInBound", 65001, "Inbound", "Allow", "AzureLoadBalancer", "*"),
    ("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
    ("AllowVnetOutBound", 65000, "Outbound", "Allow", "VirtualNetwork", "VirtualNetwork"),
    ("AllowInternetOutBound", 65001, "Outbound", "Allow", "*", "Internet"),
    ("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
]


def render_rule(n: NsgRecord, r: RuleRecord, version: int) -> dict[str, Any]:
    m = n.meta
    props = r.properties.model_dump(mode="json", exclude_none=True)
    props["provisioningState"] = "Succeeded"
    return {"id": K.rule_id(m.subscription, m.resourceGroup, m.name, r.name), "name": r.name,
            "type": K.RULE_TYPE, "etag": _etag(m.uid, version), "properties": props}


def render_nsg(n: NsgRecord, version: int, subnets: list[str]) -> dict[str, Any]:
    m = n.meta
    nid = K.nsg_id(m.subscription, m.resourceGroup, m.name)
    defaults = [
        {"id": f"{nid}/defaultSecurityRules/{name}", "name": name,
         "type": f"{K.NSG_TYPE}/defaultSecurityRules",
         "properties": {"description": "default rule", "protocol": "*", "sourcePortRange": "*",
                        "destinationPortRange": "*", "sourceAddressPrefix": src, "destinationAddressPrefix": dst,
                        "access": access, "priority": prio, "direction": direction, "provisioningState": "Succeeded"}}
        for name, prio, direction, access, src, dst in DEFAULT_RULES
    ]
    rules = [render_rule(n, r, version) for r in sorted(n.rules.values(),
                                                         key=lambda r: (r.properties.direction, r.properties.priority))]
    return {"id": nid, "name": m.name, "type": K.NSG_TYPE, "location": n.location, "tags": n.tags or {},
            "etag": _etag(m.uid, version),
            "properties": {"securityRules": rules, "defaultSecurityRules": defaults,
                           "subnets": [{"id": s} for s in subnets], "resourceGuid": m.uid,
                           "provisioningState": "Succeeded"}}


# ---- long-running operation headers ------------------------------------------------------


_OP_RE = re.compile(r"^[0-9a-f]{32}$")


def _done(request: Request, sub: str, location: str, body: Any, status: int,
          delete: bool = False) -> Response:
    op = uuid.uuid4().hex
    base = str(request.base_url).rstrip("/")
    version = request.query_params.get("api-version", "")
    url = f"{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operations/{op}" \
          f"?api-version={version}"
    headers = {"Azure-AsyncOperation": url, "Retry-After": RETRY_AFTER}
    if delete:
        headers["Location"] = url.replace("/operations/", "/operationResults/")
    return JSONResponse(body, status_code=status, headers=headers)


def deleted(request: Request, sub: str, find: Callable[[], str], delete: Callable[[], bool]) -> Response:
    """A DELETE's answer: 204 when there was nothing to delete (``find`` raised NotFound, or ``delete``
    found nothing), else 200 with the LRO headers, in the location ``find`` returned."""
    try:
        location = find()
    except NotFound:
        return Response(status_code=204)
    if not delete():
        return Response(status_code=204)
    return _done(request, sub, location, None, 200, delete=True)


def _check_op(op: str) -> None:
    # Network operations finish before their answer, so nothing is stored: any id we could have issued is done.
    if not _OP_RE.match(op):
        raise NotFound(f"operation '{op}' was not found")


@router.get(SUBP + "/locations/{loc}/operations/{op}")
def operation_status(sub: str, loc: str, op: str) -> Any:
    _check_op(op)
    return {"id": op, "name": op, "status": "Succeeded"}


@router.get(SUBP + "/locations/{loc}/operationResults/{op}")
def operation_result(sub: str, loc: str, op: str) -> Response:
    _check_op(op)
    return Response(status_code=204)


# ---- virtual networks -----------------------------------------------------------------


def _blocks(net: NetworkControl, v: VnetRecord) -> NodeBlocks:
    rec = net.store.get(K.blocks_key(v.meta.uid))
    return NodeBlocks.model_validate(rec.value) if rec else NodeBlocks(vnetUid=v.meta.uid)


def _vnet_view(net: NetworkControl, v: VnetRecord, version: int) -> dict[str, Any]:
    from corral.api.peerings import render_peerings  # it builds on this module

    return render_vnet(v, version, _blocks(net, v), render_peerings(net, v, version))


@router.put(VN + "/{vnet}")
def put_vnet(sub: str, rg: str, vnet: str, request: Request, body: dict[str, Any] = Depends(json_body),
             net: NetworkControl = Depends(network)) -> Response:
    record, version, created = net.vnets.put(sub, rg, vnet, VirtualNetwork.model_validate(body))
    return _done(request, sub, record.location, _vnet_view(net, record, version), 201 if created else 200)


@router.patch(VN + "/{vnet}")
def patch_vnet_tags(sub: str, rg: str, vnet: str, body: dict[str, Any] = Depends(json_body),
                    net: NetworkControl = Depends(network)) -> Any:
    record, _ = net.vnets.get(sub, rg, vnet)
    full = render_vnet(record, 0)
    full["tags"] = body.get("tags") or {}
    new, version, _ = net.vnets.put(sub, rg, vnet, VirtualNetwork.model_validate(
        {"location": record.location, "tags": full["tags"],
         "properties": {**record.extra, "addressSpace": full["properties"]["addressSpace"]}}))
    return _vnet_view(net, new, version)


@router.get(VN + "/{vnet}")
def get_vnet(sub: str, rg: str, vnet: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.vnets.get(sub, rg, vnet)
    return _vnet_view(net, record, version)


@router.get(VN)
def list_vnets(sub: str, rg: str, net: NetworkControl = Depends(network)) -> Any:
    return {"value": [_vnet_view(net, r, v) for r, v in net.vnets.list(sub, rg)]}


@router.get(SUBP + "/virtualNetworks")
def list_vnets_in_subscription(sub: str, net: NetworkControl = Depends(network)) -> Any:
    return {"value": [_vnet_view(net, r, v) for r, v in net.vnets.list(sub)]}


@router.delete(VN + "/{vnet}")
def delete_vnet(sub: str, rg: str, vnet: str, request: Request, net: NetworkControl = Depends(network)) -> Response:
    return deleted(request, sub, lambda: net.vnets.get(sub, rg, vnet)[0].location,
                   lambda: net.vnets.delete(sub, rg, vnet))


# ---- subnets --------------------------------------------------------------------------


@router.put(SN + "/{subnet}")
def put_subnet(sub: str, rg: str, vnet: str, subnet: str, request: Request,
               body: dict[str, Any] = Depends(json_body), net: NetworkControl = Depends(network)) -> Response:
    record, version, created = net.vnets.put_subnet(sub, rg, vnet, subnet, Subnet.model_validate(body))
    sn = record.subnets[subnet.lower()]
    return _done(request, sub, record.location, render_subnet(record, sn, version, _blocks(net, record)),
                 201 if created else 200)


@router.get(SN + "/{subnet}")
def get_subnet(sub: str, rg: str, vnet: str, subnet: str, net: NetworkControl = Depends(network)) -> Any:
    record, sn, version = net.vnets.get_subnet(sub, rg, vnet, subnet)
    return render_subnet(record, sn, version, _blocks(net, record))


@router.get(SN)
def list_subnets(sub: str, rg: str, vnet: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.vnets.get(sub, rg, vnet)
    blocks = _blocks(net, record)
    return {"value": [render_subnet(record, s, version, blocks)
                      for s in sorted(record.subnets.values(), key=lambda s: s.name)]}


@router.delete(SN + "/{subnet}")
def delete_subnet(sub: str, rg: str, vnet: str, subnet: str, request: Request,
                  net: NetworkControl = Depends(network)) -> Response:
    return deleted(request, sub, lambda: net.vnets.get_subnet(sub, rg, vnet, subnet)[0].location,
                   lambda: net.vnets.delete_subnet(sub, rg, vnet, subnet))


# ---- network security groups ----------------------------------------------------------------


def _nsg_view(net: NetworkControl, n: NsgRecord, version: int) -> dict[str, Any]:
    m = n.meta
    return render_nsg(n, version, net.vnets.subnets_using_nsg(m.subscription, m.resourceGroup, m.name))


@router.put(NSG + "/{nsg}")
def put_nsg(sub: str, rg: str, nsg: str, request: Request, body: dict[str, Any] = Depends(json_body),
            net: NetworkControl = Depends(network)) -> Response:
    record, version, created = net.nsgs.put(sub, rg, nsg, NetworkSecurityGroup.model_validate(body))
    return _done(request, sub, record.location, _nsg_view(net, record, version), 201 if created else 200)


@router.patch(NSG + "/{nsg}")
def patch_nsg_tags(sub: str, rg: str, nsg: str, body: dict[str, Any] = Depends(json_body),
                   net: NetworkControl = Depends(network)) -> Any:
    record, _ = net.nsgs.get(sub, rg, nsg)
    new, version, _ = net.nsgs.put(sub, rg, nsg, NetworkSecurityGroup.model_validate(
        {"location": record.location, "tags": body.get("tags") or {}}))
    return _nsg_view(net, new, version)


@router.get(NSG + "/{nsg}")
def get_nsg(sub: str, rg: str, nsg: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.nsgs.get(sub, rg, nsg)
    return _nsg_view(net, record, version)


@router.get(NSG)
def list_nsgs(sub: str, rg: str, net: NetworkControl = Depends(network)) -> Any:
    return {"value": [_nsg_view(net, r, v) for r, v in net.nsgs.list(sub, rg)]}


@router.get(SUBP + "/networkSecurityGroups")
def list_nsgs_in_subscription(sub: str, net: NetworkControl = Depends(network)) -> Any:
    return {"value": [_nsg_view(net, r, v) for r, v in net.nsgs.list(sub)]}


@router.delete(NSG + "/{nsg}")
def delete_nsg(sub: str, rg: str, nsg: str, request: Request, net: NetworkControl = Depends(network)) -> Response:
    return deleted(request, sub, lambda: net.nsgs.get(sub, rg, nsg)[0].location,
                   lambda: net.nsgs.delete(sub, rg, nsg))


# ---- security rules ----------------------------------------------------------------------


@router.put(RULE + "/{rule}")
def put_rule(sub: str, rg: str, nsg: str, rule: str, request: Request, body: dict[str, Any] = Depends(json_body),
             net: NetworkControl = Depends(network)) -> Response:
    record, version, created = net.nsgs.put_rule(sub, rg, nsg, rule, SecurityRule.model_validate(body))
    return _done(request, sub, record.location, render_rule(record, record.rules[rule.lower()], version),
                 201 if created else 200)


@router.get(RULE + "/{rule}")
def get_rule(sub: str, rg: str, nsg: str, rule: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.nsgs.get(sub, rg, nsg)
    r = record.rules.get(rule.lower())
    if r is None:
        raise NotFound(f"The Resource '{K.RULE_TYPE}/{nsg}/{rule}' under resource group '{rg}' was not found.")
    return render_rule(record, r, version)


@router.get(RULE)
def list_rules(sub: str, rg: str, nsg: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.nsgs.get(sub, rg, nsg)
    return {"value": [render_rule(record, r, version)
                      for r in sorted(record.rules.values(), key=lambda r: r.properties.priority)]}


@router.delete(RULE + "/{rule}")
def delete_rule(sub: str, rg: str, nsg: str, rule: str, request: Request,
                net: NetworkControl = Depends(network)) -> Response:
    return deleted(request, sub, lambda: net.nsgs.get(sub, rg, nsg)[0].location,
                   lambda: net.nsgs.delete_rule(sub, rg, nsg, rule))
