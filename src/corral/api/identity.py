"""A managed-identity token endpoint, App Service style, so `az login --identity` works against Corral.

``GET /metadata/identity/oauth2/token?api-version=2019-08-01&resource=<audience>`` with the header
``X-IDENTITY-HEADER: <installation token>`` answers a JWT the API's bearer check accepts
(``api/auth.py``). The Azure CLI's MSAL finds this endpoint through ``IDENTITY_ENDPOINT`` and sends
``IDENTITY_HEADER`` (``corral az-login`` sets both). The route is public in the auth middleware:
the identity header is its authentication, so it never hands a token to anyone without the secret.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from corral.api.auth import AUDIENCE, issue_jwt, same_audience
from corral.api.deps import api_version
from corral.api.errors import error_body
from corral.errors import InvalidResource, Unauthorized

router = APIRouter()

IDENTITY_HEADER = "X-IDENTITY-HEADER"
TOKEN_PATH = "/metadata/identity/oauth2/token"


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    # MSAL reports a failed App Service answer as "<statusCode>, <message>": give it both, beside ARM's error.
    body: dict[str, Any] = {**error_body(code, message), "statusCode": status, "message": message}
    return JSONResponse(status_code=status, content=body, headers={"Cache-Control": "no-store"})


@router.get(TOKEN_PATH, dependencies=[Depends(api_version)])
def token(request: Request, resource: str | None = None) -> Any:
    plane_token: str = request.app.state.plane.token
    secret = request.headers.get(IDENTITY_HEADER)
    if not secret:
        err = Unauthorized(f"the {IDENTITY_HEADER} header is required: set IDENTITY_HEADER to the installation "
                           "token of the client config (`corral az-login` does)")
        return _refuse(401, err.code, err.message)
    if not hmac.compare_digest(secret.encode(), plane_token.encode()):
        err = Unauthorized(f"the {IDENTITY_HEADER} header does not hold this installation's token")
        return _refuse(401, err.code, err.message)
    if not resource:
        raise InvalidResource(f"the 'resource' query parameter is required (this API's resource is {AUDIENCE})",
                              target="resource")
    if not same_audience(resource, AUDIENCE):
        raise InvalidResource(f"tokens are issued only for this API's resource {AUDIENCE}, not {resource!r}; "
                              "register the cloud with `corral az-login` so az asks for the right one",
                              target="resource")
    issued = issue_jwt(plane_token)
    lifetime = issued.expires_on - issued.not_before
    return JSONResponse(headers={"Cache-Control": "no-store"}, content={
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        # App Service answers expires_on/not_before as strings of epoch seconds; MSAL reads expires_on.
        "expires_on": str(issued.expires_on),
        "not_before": str(issued.not_before),
        "resource": AUDIENCE,
    })
