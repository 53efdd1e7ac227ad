"""``Microsoft.Network`` virtual network peerings: ``.../virtualNetworks/{vnet}/virtualNetworkPeerings``.

Shapes as the REST API (and ``az network vnet peering``) use them; every change is complete when
answered, with the same LRO headers as the other network routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.api.network import VN, _done, _etag, deleted, network
from corral.control import netkeys as K
from corral.control.netplane import NetworkControl
from corral.model.network import PeeringRecord, VirtualNetworkPeering, VnetRecord

router = APIRouter(dependencies=[Depends(api_version)])
PEER = VN + "/{vnet}/virtualNetworkPeerings"


def render_peering(net: NetworkControl, v: VnetRecord, p: PeeringRecord, version: int) -> dict[str, Any]:
    m = v.meta
    remote = net.peerings.remote(p)
    remote_space = {"addressPrefixes": list(remote.addressSpace.addressPrefixes) if remote else []}
    local_space = {"addressPrefixes": list(v.addressSpace.addressPrefixes)}
    return {
        "id": K.peering_id(m.subscription, m.resourceGroup, m.name, p.name), "name": p.name,
        "type": K.PEERING_TYPE, "etag": _etag(p.uid, version),
        "properties": {
            "remoteVirtualNetwork": {"id": p.remoteId},
            "allowVirtualNetworkAccess": p.allowVirtualNetworkAccess,
            "allowForwardedTraffic": p.allowForwardedTraffic,
            "allowGatewayTransit": p.allowGatewayTransit,
            "useRemoteGateways": False, "doNotVerifyRemoteGateways": False,
            "peerCompleteVnets": True, "enableOnlyIPv6Peering": False,
            "peeringState": net.peerings.state(v, p),
            # Nodes read both address spaces live: a peering is never out of sync.
            "peeringSyncLevel": "FullyInSync",
            "remoteAddressSpace": remote_space, "remoteVirtualNetworkAddressSpace": remote_space,
            "localAddressSpace": local_space, "localVirtualNetworkAddressSpace": local_space,
            "resourceGuid": p.uid, "provisioningState": "Succeeded",
        },
    }


def render_peerings(net: NetworkControl, v: VnetRecord, version: int) -> list[dict[str, Any]]:
    return [render_peering(net, v, p, version) for p in sorted(v.peerings.values(), key=lambda p: p.name.lower())]


@router.put(PEER + "/{name}")
def put_peering(sub: str, rg: str, vnet: str, name: str, request: Request, body: dict[str, Any] = Depends(json_body),
                net: NetworkControl = Depends(network)) -> Response:
    record, version, created = net.peerings.put(sub, rg, vnet, name, VirtualNetworkPeering.model_validate(body))
    return _done(request, sub, record.location, render_peering(net, record, record.peerings[name.lower()], version),
                 201 if created else 200)


@router.get(PEER + "/{name}")
def get_peering(sub: str, rg: str, vnet: str, name: str, net: NetworkControl = Depends(network)) -> Any:
    record, p, version = net.peerings.get(sub, rg, vnet, name)
    return render_peering(net, record, p, version)


@router.get(PEER)
def list_peerings(sub: str, rg: str, vnet: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.vnets.get(sub, rg, vnet)
    return {"value": render_peerings(net, record, version)}


@router.delete(PEER + "/{name}")
def delete_peering(sub: str, rg: str, vnet: str, name: str, request: Request,
                   net: NetworkControl = Depends(network)) -> Response:
    return deleted(request, sub, lambda: net.peerings.get(sub, rg, vnet, name)[0].location,
                   lambda: net.peerings.delete(sub, rg, vnet, name))
