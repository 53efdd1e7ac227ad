"""Request-scoped dependencies shared by the route modules."""

from __future__ import annotations

from fastapi import Request

from corral.control.groups import GroupService
from corral.control.nodes import NodeDirectory
from corral.errors import CorralError


class MissingApiVersion(CorralError):
    code = "MissingApiVersionParameter"
    status = 400


def api_version(request: Request) -> str:
    version = request.query_params.get("api-version")
    if not version:
        raise MissingApiVersion("The api-version query parameter (?api-version=) is required for all requests.")
    return version


def service(request: Request) -> GroupService:
    return request.app.state.plane.groups


def nodes(request: Request) -> NodeDirectory:
    return request.app.state.plane.nodes
