"""The few Azure Resource Manager routes `az network lb create` needs: a generic resource list, and template
deployments of load balancers (and the virtual networks or public IPs such a template may carry).

`az network lb create` does not PUT the load balancer: it builds an ARM template and deploys it. Corral
deploys only what that template holds — ``Microsoft.Network/loadBalancers`` and
``Microsoft.Network/virtualNetworks`` are created through their services; a
``Microsoft.Network/publicIPAddresses`` is accepted and made nothing of (a frontend naming one is
public on the nodes' own addresses) — and evaluates only ``[reference('name')]`` outputs. Anything
else is a 400 that says so. A deployment is done when answered.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.api.loadbalancers import render_lb
from corral.api.network import render_vnet
from corral.errors import InvalidRequest, NotFound
from corral.model.lb import LoadBalancer
from corral.model.network import VirtualNetwork

router = APIRouter(dependencies=[Depends(api_version)])

DEPLOYMENTS = "/deployments/"
P = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Resources/deployments/{name}"
LB, VNET, PIP = "microsoft.network/loadbalancers", "microsoft.network/virtualnetworks", \
    "microsoft.network/publicipaddresses"
_REFERENCE = re.compile(r"^\[reference\('([^']+)'\)\]$")
_EQ = re.compile(r"(\w+)\s+eq\s+'([^']*)'", re.IGNORECASE)


def _plane(request: Request) -> Any:
    return request.app.state.plane


@router.get("/subscriptions/{sub}/resources")
def list_resources(sub: str, request: Request) -> Any:
    """Resources of the types Corral keeps that match ``$filter`` (``resourceGroup``, ``name``,
    ``resourceType`` ``eq`` clauses joined by ``and``), as `az` asks when it checks what exists."""
    clauses = {k.lower(): v for k, v in _EQ.findall(request.query_params.get("$filter", ""))}
    plane = _plane(request)
    rg, name, rtype = clauses.get("resourcegroup"), clauses.get("name"), clauses.get("resourcetype", "").lower()
    out: list[dict[str, Any]] = []
    if rtype in ("", LB):
        out += [render_lb(r, v) for r, v in plane.orchestration.loadbalancers.list(sub, rg)]
    if rtype in ("", VNET):
        out += [render_vnet(r, v) for r, v in plane.network.vnets.list(sub, rg)]
    if name is not None:
        out = [r for r in out if r["name"].lower() == name.lower()]
    return {"value": [{k: r[k] for k in ("id", "name", "type", "location", "tags") if k in r} for r in out]}


def _deployment(sub: str, rg: str, name: str, outputs: dict[str, Any], resources: list[str],
                mode: str) -> dict[str, Any]:
    return {"id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Resources/deployments/{name}",
            "name": name, "type": "Microsoft.Resources/deployments",
            "properties": {"provisioningState": "Succeeded", "mode": mode, "correlationId": uuid.uuid4().hex,
                           "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                           "outputs": outputs, "outputResources": [{"id": r} for r in resources]}}


def _checked(template: dict[str, Any]) -> tuple[list[tuple[str, str, dict[str, Any]]], dict[str, str]]:
    """The template's resources as (type, name, resource) in deployment order, and its outputs as output ->
    the resource it references: all checked before anything is deployed, so a bad template changes nothing."""
    resources = template.get("resources") or []
    if not isinstance(resources, list):
        raise InvalidRequest("properties.template.resources must be a list", target="properties.template.resources")
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i, res in enumerate(resources):
        target = f"properties.template.resources[{i}]"
        if not isinstance(res, dict):
            raise InvalidRequest(f"resource {i} of the template is not an object", target=target)
        rtype = str(res.get("type", "")).lower()
        if rtype not in (LB, VNET, PIP):
            raise InvalidRequest(f"Corral cannot deploy resources of type '{res.get('type')}' (only load balancers, "
                                 "virtual networks and public IP addresses)", target=target)
        if not isinstance(res.get("name"), str) or not res["name"]:
            raise InvalidRequest(f"resource {i} of the template needs a name", target=f"{target}.name")
        out.append((rtype, res["name"], res))
    order = {VNET: 0, PIP: 1, LB: 2}
    out.sort(key=lambda r: order[r[0]])
    deployed = {name for rtype, name, _ in out if rtype != PIP}  # a public IP is accepted, not made
    given = template.get("outputs") or {}
    if not isinstance(given, dict):
        raise InvalidRequest("properties.template.outputs must be an object", target="properties.template.outputs")
    outputs: dict[str, str] = {}
    for key, value in given.items():
        m = _REFERENCE.match(str(value.get("value", "")) if isinstance(value, dict) else "")
        if not m or m.group(1) not in deployed:
            raise InvalidRequest(f"output '{key}': Corral evaluates only [reference('<a deployed resource>')]",
                                 target=f"properties.template.outputs.{key}")
        outputs[key] = m.group(1)
    return out, outputs


@router.put(P)
def deploy(sub: str, rg: str, name: str, request: Request, body: dict[str, Any] = Depends(json_body)) -> Any:
    props = body.get("properties") or {}
    template = props.get("template") if isinstance(props, dict) else None
    if not isinstance(template, dict):
        raise InvalidRequest("properties.template is required (Corral deploys inline templates only)",
                             target="properties.template")
    if props.get("parameters") or template.get("parameters"):
        raise InvalidRequest("Corral deploys templates without parameters only", target="properties.parameters")
    resources, references = _checked(template)
    # Every resource's body is validated before the first is deployed. A public IP is made nothing of: the
    # nodes' own addresses serve a frontend that names one.
    models = {VNET: VirtualNetwork, LB: LoadBalancer}
    specs = [(rtype, rname, models[rtype].model_validate(
        {k: res[k] for k in ("location", "tags", "sku", "properties") if res.get(k) is not None}))
        for rtype, rname, res in resources if rtype != PIP]
    plane = _plane(request)
    made: dict[str, dict[str, Any]] = {}
    ids: list[str] = []
    for rtype, rname, spec in specs:
        if rtype == VNET:
            record, version, _ = plane.network.vnets.put(sub, rg, rname, spec)
            made[rname] = render_vnet(record, version)
        else:
            svc = plane.orchestration.loadbalancers
            record, version, _ = svc.put(sub, rg, rname, spec)
            made[rname] = render_lb(record, version, svc)
        ids.append(made[rname]["id"])
    outputs = {key: {"type": template["outputs"][key].get("type", "Object"), "value": made[ref]["properties"]}
               for key, ref in references.items()}
    doc = _deployment(sub, rg, name, outputs, ids, str(props.get("mode") or "Incremental"))
    plane.store.put(f"{DEPLOYMENTS}{sub.lower()}/{rg.lower()}/{name.lower()}", doc)
    return JSONResponse(doc, status_code=201)


@router.get(P)
def get_deployment(sub: str, rg: str, name: str, request: Request) -> Any:
    rec = _plane(request).store.get(f"{DEPLOYMENTS}{sub.lower()}/{rg.lower()}/{name.lower()}")
    if rec is None:
        raise NotFound(f"Deployment '{name}' could not be found.")
    return rec.value
