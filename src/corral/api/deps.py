"""Request-scoped dependencies shared by the route modules.

They are ``async def`` although they never wait: FastAPI runs a plain ``def``
dependency on its thread pool, a hand-off per dependency per request that cost
more than the work of a cached GET.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from corral.api.readcache import RenderedGroups
from corral.control.groups import GroupService
from corral.control.nodes import NodeDirectory
from corral.errors import CorralError

T = TypeVar("T")


class MissingApiVersion(CorralError):
    code = "MissingApiVersionParameter"
    status = 400


async def api_version(request: Request) -> str:
    version = request.query_params.get("api-version")
    if not version:
        raise MissingApiVersion("The api-version query parameter (?api-version=) is required for all requests.")
    return version


async def service(request: Request) -> GroupService:
    return request.app.state.plane.groups


async def nodes(request: Request) -> NodeDirectory:
    return request.app.state.plane.nodes


async def rendered(request: Request) -> RenderedGroups:
    return request.app.state.rendered_groups


async def read_store(store: object, fn: Callable[[], T]) -> T:
    """``fn()``, a read of the store: inline when the store's reads never wait (SQLite, in-process),
    else on the thread pool. The hand-off costs ~40% of a cached GET, but a read that waits on the
    network (etcd) must not hold up the event loop."""
    if getattr(store, "local_reads", False):
        return fn()
    return await run_in_threadpool(fn)
