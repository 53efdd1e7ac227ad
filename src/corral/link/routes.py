"""The control plane's side of the HTTP link: one route per ``ControlPlaneLink`` call, under ``/link/v1``.

Every route but ``ca`` and ``join`` authenticates the calling node by its node token
(``corral.control.credentials``) and authorizes the call: a node reads only its own
assignments and statuses, and writes only its own registration, heartbeat, statuses and
releases; anything else is 403. The work itself is ``LocalLink``'s, the same code the
in-process agent of `corral up` calls.

Adding a link call: a method on the protocol and ``LocalLink``, a route here, a method on
``HttpLink`` (``corral.link.http``).
"""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from corral.control.credentials import NodeCredentials
from corral.errors import Forbidden, NotAssigned
from corral.link.join import JoinAnswer, JoinRequest
from corral.link.local import LocalLink
from corral.link.protocol import LINK_PREFIX
from corral.model.armids import same_id
from corral.model.metrics import MetricsReport
from corral.model.records import GROUPS, GroupRecord, NodeInfo
from corral.model.status import GroupStatus
from corral.serving import stream_threads

router = APIRouter(prefix=LINK_PREFIX)
# Long polls (assignment waits, DNS feeds) park a thread each: their own pool, apart from the API's.
WAIT_MAX = 30.0
HOLD_MAX = 600.0  # the longest an agent may ask its node to be left alone while it restarts


def _link(request: Request) -> LocalLink:
    return request.app.state.plane.link


def _credentials(request: Request) -> NodeCredentials:
    creds = request.app.state.plane.credentials
    if creds is None:
        raise Forbidden("this control plane takes no remote agents (start it with `corral server`)")
    return creds


def caller(request: Request) -> str:
    """The node making the call, from its node token (401 without a valid one)."""
    return _credentials(request).verify(request.headers.get("authorization"))


def _same_node(caller: str, node: str) -> None:
    if caller != node:
        raise Forbidden(f"node '{caller}' may act only for itself, not for node '{node}'")


def _bound_group(link: LocalLink, caller: str, key: str, uid: str | None = None) -> GroupRecord:
    """The group at ``key`` if it is bound to ``caller`` (with ``uid`` if given); 403 otherwise."""
    if not key.startswith(GROUPS):
        raise Forbidden(f"'{key}' is not a container group")
    group = link.assignment(caller, key)
    if group is None or (uid is not None and group.meta.uid != uid):
        raise NotAssigned(f"container group {uid or key} is not bound to node '{caller}'")
    return group


# bodies ------------------------------------------------------------------------------------------------------------
class NodeCall(BaseModel):
    node: str


class HeartbeatCall(BaseModel):
    node: str
    hold: float = Field(default=0.0, ge=0, le=HOLD_MAX)


class WaitCall(BaseModel):
    node: str
    after: int
    timeout: float = Field(ge=0, le=WAIT_MAX)


class KeyCall(BaseModel):
    node: str
    key: str


class StatusCall(BaseModel):
    key: str
    uid: str


class ReportCall(BaseModel):
    key: str
    status: GroupStatus


class VnetCall(BaseModel):
    node: str
    subnetId: str | None = None


class RulesCall(BaseModel):
    key: str
    nsgId: str
    subnetId: str | None = None


class DnsCall(BaseModel):
    after: int
    timeout: float = Field(ge=0, le=WAIT_MAX)


class LbAppliedCall(BaseModel):
    node: str
    revision: int = Field(ge=0)


# joining -----------------------------------------------------------------------------------------------------------
@router.get("/ca", response_class=PlainTextResponse)
def ca(request: Request) -> str:
    """The cluster CA (PEM). Public: a joining agent checks it against the pin in its join token."""
    return _credentials(request).cluster.caCert


@router.post("/join")
def join(body: JoinRequest, request: Request) -> JoinAnswer:
    return _credentials(request).join(body)


# the calls ---------------------------------------------------------------------------------------------------------
@router.post("/register")
def register(body: NodeInfo, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    _same_node(node, body.name)
    _link(request).register(body)
    return {}


@router.post("/heartbeat")
def heartbeat(body: HeartbeatCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    _same_node(node, body.node)
    _link(request).heartbeat(node, body.hold)
    return {}


@router.post("/assignments")
def assignments(body: NodeCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    _same_node(node, body.node)
    rev, groups = _link(request).assignments(node)
    return {"revision": rev, "groups": {k: g.dump() for k, g in groups.items()}}


@router.post("/wait")
async def wait(body: WaitCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    """Changed keys, each group key with its record if it is bound to the caller (null otherwise: gone,
    or another node's), so the agent needs no second call to tell which."""
    _same_node(node, body.node)
    link = _link(request)

    def work() -> dict[str, Any]:
        rev, keys = link.wait(node, body.after, body.timeout)
        if keys is None:
            return {"revision": rev, "keys": None}
        out: dict[str, Any] = {}
        for key in sorted(keys):
            group = link.assignment(node, key) if key.startswith(GROUPS) else None
            out[key] = group.dump() if group is not None else None
        return {"revision": rev, "keys": out}

    return await anyio.to_thread.run_sync(work, limiter=stream_threads())


@router.post("/assignment")
def assignment(body: KeyCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    _same_node(node, body.node)
    group = _link(request).assignment(node, body.key)
    return {"group": group.dump() if group is not None else None}


@router.post("/last-status")
def last_status(body: StatusCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    link = _link(request)
    _bound_group(link, node, body.key, body.uid)
    st = link.last_status(body.key, body.uid)
    return {"status": st.model_dump(mode="json") if st is not None else None}


@router.post("/report")
def report(body: ReportCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    link = _link(request)
    _bound_group(link, node, body.key, body.status.uid)
    _same_node(node, body.status.node)
    link.report(body.key, body.status)
    return {}


@router.post("/release")
def release(body: StatusCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    link = _link(request)
    _bound_group(link, node, body.key, body.uid)
    link.release(body.key, body.uid)
    return {}


@router.post("/vnet-config")
def vnet_config(body: VnetCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    _same_node(node, body.node)
    conf = _link(request).vnet_config_for(node, body.subnetId)
    return conf.model_dump(mode="json", by_alias=True)


@router.post("/group-rules")
def group_rules(body: RulesCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    """The rules of the security group that one of the caller's own groups names; any other is 403."""
    link = _link(request)
    nsg = _bound_group(link, node, body.key).spec.properties.networkSecurityGroup
    if nsg is None or not same_id(nsg.id, body.nsgId):
        raise Forbidden(f"container group {body.key} names no network security group '{body.nsgId}'")
    rules = link.group_rules(body.key, body.nsgId, body.subnetId)
    return {"rules": [r.model_dump(mode="json", by_alias=True) for r in rules]}


@router.post("/report-metrics")
def report_metrics(body: MetricsReport, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    """Samples of the caller's own groups only; a group that moved away a moment ago is dropped, not refused."""
    _same_node(node, body.node)
    link = _link(request)
    _, groups = link.assignments(node)
    mine = {g.meta.uid for g in groups.values()}
    body.groups = [g for g in body.groups if g.uid in mine]
    if body.groups:
        link.report_metrics(body)
    return {}


@router.post("/dns-changes")
async def dns_changes(body: DnsCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    link = _link(request)
    update = await anyio.to_thread.run_sync(link.dns_changes, body.after, body.timeout, limiter=stream_threads())
    return update.model_dump(mode="json")


@router.post("/load-balancer-rules")
def load_balancer_rules(body: NodeCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    _same_node(node, body.node)
    return _link(request).load_balancer_rules(node).model_dump(mode="json")


@router.post("/report-load-balancers")
def report_load_balancers(body: LbAppliedCall, request: Request, node: str = Depends(caller)) -> dict[str, Any]:
    _same_node(node, body.node)
    _link(request).report_load_balancers(node, body.revision)
    return {}
