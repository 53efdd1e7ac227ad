"""ARM routes of ``Microsoft.Network/loadBalancers`` (the subset NGroups use) and their backend pools.

Like the other network routes, every change is done when it is answered (the
store write is the whole operation; agents apply it live). Frontends, rules and
probes change through a PUT of the whole load balancer (as ``az network lb rule
create`` does); backend pools also have their own PUT, so the orchestrator can
change one pool's addresses without racing other edits. ``If-Match`` is honoured.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.api.network import _done
from corral.control.loadbalancers import LoadBalancerService, etag, lb_id
from corral.errors import NotFound
from corral.model.armids import LB_TYPE, parse_child_id
from corral.model.group import TagsPatch
from corral.model.lb import BackendPool, LbRecord, LoadBalancer

router = APIRouter(dependencies=[Depends(api_version)])

SUBP = "/subscriptions/{sub}/providers/Microsoft.Network"
RG = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers"
P = RG + "/{name}"
KINDS = {"frontendIPConfigurations": "frontendIPConfigurations", "backendAddressPools": "backendAddressPools",
         "loadBalancingRules": "loadBalancingRules", "probes": "probes"}


def lbs(request: Request) -> LoadBalancerService:
    return request.app.state.plane.orchestration.loadbalancers


def _refs(lb: str, kind: str, names: list[str]) -> list[dict[str, str]]:
    return [{"id": f"{lb}/{kind}/{n}"} for n in names]


def render_lb(record: LbRecord, version: int, svc: LoadBalancerService | None = None) -> dict[str, Any]:
    m = record.meta
    me = lb_id(m.subscription, m.resourceGroup, m.name)
    tag = etag(m.uid, version)
    props = record.spec.properties
    # Which rules use each frontend, pool and probe (read-only back-references, as Azure shows them).
    uses: dict[tuple[str, str], list[str]] = {}
    for r in props.loadBalancingRules:
        rp = r.properties
        refs = [("frontendIPConfigurations", rp.frontendIPConfiguration.id), *[
            ("backendAddressPools", p) for p in rp.pool_refs()]]
        if rp.probe is not None:
            refs.append(("probes", rp.probe.id))
        for kind, ref in refs:
            try:
                uses.setdefault((kind, parse_child_id(ref, LB_TYPE, kind)[1].lower()), []).append(r.name)
            except ValueError:
                continue

    def child(kind: str, item: Any) -> dict[str, Any]:
        body = item.model_dump(mode="json", exclude_none=True)
        cp = body.setdefault("properties", {})
        cp["provisioningState"] = "Succeeded"
        if kind == "frontendIPConfigurations" and m.frontendAddresses.get(item.name.lower()):
            cp["privateIPAddress"] = m.frontendAddresses[item.name.lower()]
        used = uses.get((kind, item.name.lower()))
        if used and kind != "loadBalancingRules":
            cp["loadBalancingRules"] = _refs(me, "loadBalancingRules", used)
        return {"id": f"{me}/{kind}/{item.name}", "name": item.name, "type": f"{LB_TYPE}/{kind}", "etag": tag,
                **{k: v for k, v in body.items() if k not in ("id", "name", "type", "etag")}}

    spec = record.spec.model_dump(mode="json", exclude_none=True)
    out_props: dict[str, Any] = {k: v for k, v in spec.get("properties", {}).items() if k not in KINDS}
    for kind in KINDS:
        out_props[kind] = [child(kind, item) for item in getattr(props, kind)]
    out_props.update({"inboundNatRules": [], "inboundNatPools": [], "outboundRules": [],
                      "provisioningState": "Succeeded", "resourceGuid": m.uid})
    if svc is not None:
        # Corral extension: nodes whose agent has not yet applied this version of the rules.
        out_props["pendingNodes"] = svc.pending_nodes(version)
    return {"id": me, "name": m.name, "type": LB_TYPE, "location": record.spec.location, "etag": tag,
            "tags": record.spec.tags or {}, "sku": record.spec.sku or {"name": "Standard", "tier": "Regional"},
            "properties": out_props}


def render_child(record: LbRecord, version: int, kind: str, name: str, svc: LoadBalancerService) -> dict[str, Any]:
    for item in render_lb(record, version, svc)["properties"][kind]:
        if item["name"].lower() == name.lower():
            return item
    raise NotFound(f"The Resource '{LB_TYPE}/{record.meta.name}/{kind}/{name}' under resource group "
                   f"'{record.meta.resourceGroup}' was not found.")


# ---- load balancers --------------------------------------------------------------------


@router.put(P)
def put(sub: str, rg: str, name: str, request: Request, body: dict[str, Any] = Depends(json_body),
        svc: LoadBalancerService = Depends(lbs)) -> Response:
    record, version, created = svc.put(sub, rg, name, LoadBalancer.model_validate(body),
                                       request.headers.get("if-match"))
    return _done(request, sub, record.spec.location or "local", render_lb(record, version, svc),
                 201 if created else 200)


@router.patch(P)
def patch_tags(sub: str, rg: str, name: str, body: dict[str, Any] = Depends(json_body),
               svc: LoadBalancerService = Depends(lbs)) -> Any:
    record, version = svc.update_tags(sub, rg, name, TagsPatch.model_validate(body).tags)
    return render_lb(record, version, svc)


@router.get(P)
def get(sub: str, rg: str, name: str, svc: LoadBalancerService = Depends(lbs)) -> Any:
    record, version = svc.get(sub, rg, name)
    return render_lb(record, version, svc)


@router.get(RG)
def list_in_group(sub: str, rg: str, svc: LoadBalancerService = Depends(lbs)) -> Any:
    return {"value": [render_lb(r, v, svc) for r, v in svc.list(sub, rg)]}


@router.get(SUBP + "/loadBalancers")
def list_in_subscription(sub: str, svc: LoadBalancerService = Depends(lbs)) -> Any:
    return {"value": [render_lb(r, v, svc) for r, v in svc.list(sub)]}


@router.delete(P)
def delete(sub: str, rg: str, name: str, request: Request, svc: LoadBalancerService = Depends(lbs)) -> Response:
    try:
        record, _ = svc.get(sub, rg, name)
    except NotFound:
        return Response(status_code=204)
    if not svc.delete(sub, rg, name):
        return Response(status_code=204)
    return _done(request, sub, record.spec.location or "local", None, 200, delete=True)


# ---- backend pools (their own PUT) and the other children (read) ------------------------------


@router.put(P + "/backendAddressPools/{pool}")
def put_pool(sub: str, rg: str, name: str, pool: str, request: Request, body: dict[str, Any] = Depends(json_body),
             svc: LoadBalancerService = Depends(lbs)) -> Response:
    item = BackendPool.model_validate({**body, "name": pool})
    record, version, created = svc.put_pool(sub, rg, name, item, request.headers.get("if-match"))
    return _done(request, sub, record.spec.location or "local",
                 render_child(record, version, "backendAddressPools", pool, svc), 201 if created else 200)


@router.delete(P + "/backendAddressPools/{pool}")
def delete_pool(sub: str, rg: str, name: str, pool: str, request: Request,
                svc: LoadBalancerService = Depends(lbs)) -> Response:
    try:
        record, _ = svc.get(sub, rg, name)
    except NotFound:
        return Response(status_code=204)
    if not svc.delete_child(sub, rg, name, "backendAddressPools", pool):
        return Response(status_code=204)
    return _done(request, sub, record.spec.location or "local", None, 200, delete=True)


def _child_routes(kind: str) -> None:
    @router.get(P + f"/{kind}", name=f"list_{kind}")
    def list_children(sub: str, rg: str, name: str, svc: LoadBalancerService = Depends(lbs)) -> Any:
        record, version = svc.get(sub, rg, name)
        return {"value": render_lb(record, version, svc)["properties"][kind]}

    @router.get(P + f"/{kind}/{{child}}", name=f"get_{kind}")
    def get_child(sub: str, rg: str, name: str, child: str, svc: LoadBalancerService = Depends(lbs)) -> Any:
        record, version = svc.get(sub, rg, name)
        return JSONResponse(render_child(record, version, kind, child, svc))


for _kind in KINDS:
    _child_routes(_kind)
