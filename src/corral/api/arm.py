"""The Azure Resource Manager routes around the resource providers that ARM clients (the Azure CLI) need:
cloud metadata, subscriptions and resource groups.

Corral has one subscription per installation (the one in the client config) and implicit resource
groups: a resource group exists as soon as it is named, in the installation's location. These routes
describe that, so `az` can register Corral as a cloud, log in and default a location.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict

from corral.api.auth import AUDIENCE, tenant_id
from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.config import DEFAULT_SUBSCRIPTION
from corral.errors import InvalidResourceGroupName, LocationNotAvailable, SubscriptionNotFound

router = APIRouter(dependencies=[Depends(api_version)])

# ARM's rule: up to 90 letters, digits, '_', '-', '.', '(' and ')', not ending in '.'.
RG_NAME_RE = re.compile(r"^[-\w.()]{0,89}[-\w()]$")


class ResourceGroupBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    location: str | None = None
    tags: dict[str, str] | None = None


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


@router.get("/metadata/endpoints")
def endpoints(request: Request) -> Any:
    """The cloud description `az cloud register --endpoint-resource-manager` reads (the 2022-09-01 shape)."""
    base = _base_url(request)
    return {
        "name": "Corral",
        "resourceManager": f"{base}/",
        "portal": f"{base}/",
        "gallery": f"{base}/",
        # There is no Entra ID here: tokens come from Corral's managed-identity endpoint (api/identity.py).
        "authentication": {"loginEndpoint": f"{base}/", "audiences": [AUDIENCE], "tenant": "common",
                           "identityProvider": "AAD"},
        "suffixes": {},
    }


def _subscription(request: Request, sub: str) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{sub}", "subscriptionId": sub, "tenantId": tenant_id(request.app.state.plane.token),
        "displayName": "Corral", "state": "Enabled", "authorizationSource": "RoleBased", "managedByTenants": [],
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "Corral",
                                 "spendingLimit": "Off"},
    }


def _known(sub: str) -> str:
    if sub.lower() != DEFAULT_SUBSCRIPTION:
        raise SubscriptionNotFound(f"The subscription '{sub}' could not be found: this installation has only "
                                   f"'{DEFAULT_SUBSCRIPTION}'.")
    return DEFAULT_SUBSCRIPTION


@router.get("/subscriptions")
def list_subscriptions(request: Request) -> Any:
    return {"value": [_subscription(request, DEFAULT_SUBSCRIPTION)]}


@router.get("/subscriptions/{sub}")
def get_subscription(sub: str, request: Request) -> Any:
    return _subscription(request, _known(sub))


@router.get("/subscriptions/{sub}/locations")
def list_locations(sub: str, request: Request) -> Any:
    loc = request.app.state.plane.location
    return {"value": [{"id": f"/subscriptions/{_known(sub)}/locations/{loc}", "name": loc, "displayName": loc,
                       "regionalDisplayName": loc, "type": "Region"}]}


def _resource_group(request: Request, sub: str, rg: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    sub = _known(sub)
    if not RG_NAME_RE.match(rg):
        raise InvalidResourceGroupName(
            f"Resource group '{rg}' is not a valid name: use up to 90 letters, digits, '_', '-', '.', '(' and ')', "
            "not ending in '.'.", target="resourceGroupName")
    return {"id": f"/subscriptions/{sub}/resourceGroups/{rg}", "name": rg,
            "type": "Microsoft.Resources/resourceGroups", "location": request.app.state.plane.location,
            "tags": tags or {}, "properties": {"provisioningState": "Succeeded"}}


@router.get("/subscriptions/{sub}/resourceGroups/{rg}")
def get_resource_group(sub: str, rg: str, request: Request) -> Any:
    return _resource_group(request, sub, rg)


@router.head("/subscriptions/{sub}/resourceGroups/{rg}")
def resource_group_exists(sub: str, rg: str, request: Request) -> Response:
    _resource_group(request, sub, rg)
    return Response(status_code=204)


@router.put("/subscriptions/{sub}/resourceGroups/{rg}")
async def create_resource_group(sub: str, rg: str, request: Request) -> Any:
    """`az group create`: resource groups are implicit, so this only checks the name and the location."""
    body = ResourceGroupBody.model_validate(await json_body(request))
    loc = request.app.state.plane.location
    if body.location and body.location.replace(" ", "").lower() != loc.lower():
        raise LocationNotAvailable(f"This installation has only the location '{loc}', not '{body.location}'.",
                                   target="location")
    return _resource_group(request, sub, rg, body.tags)
