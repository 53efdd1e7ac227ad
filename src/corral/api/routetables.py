"""``Microsoft.Network`` route tables and routes: ``.../routeTables/{table}[/routes/{route}]``.

A subnet uses a route table through its ``routeTable.id`` (the subnet routes); nodes apply the
routes live. Every change is complete when answered, with the other network routes' LRO headers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.api.network import RGP, SUBP, _done, _etag, deleted, network
from corral.control import netkeys as K
from corral.control.netplane import NetworkControl
from corral.errors import NotFound
from corral.model.network import Route, RouteRecord, RouteTable, RouteTableRecord

router = APIRouter(dependencies=[Depends(api_version)])
RT = RGP + "/routeTables"
ROUTE = RT + "/{table}/routes"


def render_route(t: RouteTableRecord, r: RouteRecord, version: int) -> dict[str, Any]:
    m = t.meta
    props = r.properties.model_dump(mode="json", exclude_none=True)
    props |= {"hasBgpOverride": False, "provisioningState": "Succeeded"}
    return {"id": K.route_id(m.subscription, m.resourceGroup, m.name, r.name), "name": r.name,
            "type": K.ROUTE_TYPE, "etag": _etag(m.uid, version), "properties": props}


def render_table(net: NetworkControl, t: RouteTableRecord, version: int) -> dict[str, Any]:
    m = t.meta
    routes = [render_route(t, r, version) for r in sorted(t.routes.values(), key=lambda r: r.name.lower())]
    subnets = net.route_tables.subnets_using(m.subscription, m.resourceGroup, m.name)
    return {"id": K.route_table_id(m.subscription, m.resourceGroup, m.name), "name": m.name,
            "type": K.ROUTE_TABLE_TYPE, "location": t.location, "tags": t.tags or {}, "etag": _etag(m.uid, version),
            "properties": {"routes": routes, "subnets": [{"id": s} for s in subnets],
                           "disableBgpRoutePropagation": t.disableBgpRoutePropagation, "resourceGuid": m.uid,
                           "provisioningState": "Succeeded"}}


@router.put(RT + "/{table}")
def put_table(sub: str, rg: str, table: str, request: Request, body: dict[str, Any] = Depends(json_body),
              net: NetworkControl = Depends(network)) -> Response:
    record, version, created = net.route_tables.put(sub, rg, table, RouteTable.model_validate(body))
    return _done(request, sub, record.location, render_table(net, record, version), 201 if created else 200)


@router.patch(RT + "/{table}")
def patch_table_tags(sub: str, rg: str, table: str, body: dict[str, Any] = Depends(json_body),
                     net: NetworkControl = Depends(network)) -> Any:
    record, _ = net.route_tables.get(sub, rg, table)
    new, version, _ = net.route_tables.put(sub, rg, table, RouteTable.model_validate(
        {"location": record.location, "tags": body.get("tags") or {},
         "properties": {"disableBgpRoutePropagation": record.disableBgpRoutePropagation}}))
    return render_table(net, new, version)


@router.get(RT + "/{table}")
def get_table(sub: str, rg: str, table: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.route_tables.get(sub, rg, table)
    return render_table(net, record, version)


@router.get(RT)
def list_tables(sub: str, rg: str, net: NetworkControl = Depends(network)) -> Any:
    return {"value": [render_table(net, r, v) for r, v in net.route_tables.list(sub, rg)]}


@router.get(SUBP + "/routeTables")
def list_tables_in_subscription(sub: str, net: NetworkControl = Depends(network)) -> Any:
    return {"value": [render_table(net, r, v) for r, v in net.route_tables.list(sub)]}


@router.delete(RT + "/{table}")
def delete_table(sub: str, rg: str, table: str, request: Request, net: NetworkControl = Depends(network)) -> Response:
    return deleted(request, sub, lambda: net.route_tables.get(sub, rg, table)[0].location,
                   lambda: net.route_tables.delete(sub, rg, table))


@router.put(ROUTE + "/{route}")
def put_route(sub: str, rg: str, table: str, route: str, request: Request, body: dict[str, Any] = Depends(json_body),
              net: NetworkControl = Depends(network)) -> Response:
    record, version, created = net.route_tables.put_route(sub, rg, table, route, Route.model_validate(body))
    return _done(request, sub, record.location, render_route(record, record.routes[route.lower()], version),
                 201 if created else 200)


@router.get(ROUTE + "/{route}")
def get_route(sub: str, rg: str, table: str, route: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.route_tables.get(sub, rg, table)
    r = record.routes.get(route.lower())
    if r is None:
        raise NotFound(f"The Resource '{K.ROUTE_TYPE}/{table}/{route}' under resource group '{rg}' was not found.")
    return render_route(record, r, version)


@router.get(ROUTE)
def list_routes(sub: str, rg: str, table: str, net: NetworkControl = Depends(network)) -> Any:
    record, version = net.route_tables.get(sub, rg, table)
    return {"value": [render_route(record, r, version)
                      for r in sorted(record.routes.values(), key=lambda r: r.name.lower())]}


@router.delete(ROUTE + "/{route}")
def delete_route(sub: str, rg: str, table: str, route: str, request: Request,
                 net: NetworkControl = Depends(network)) -> Response:
    return deleted(request, sub, lambda: net.route_tables.get(sub, rg, table)[0].location,
                   lambda: net.route_tables.delete_route(sub, rg, table, route))
