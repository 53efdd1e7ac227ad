"""The agent's side of the HTTP link: ``ControlPlaneLink`` over HTTPS to any of the cluster's servers.

Calls go to the server that answered last; when it does not answer, to the next one. The
servers are checked against the cluster CA, and every call carries the node token. An error
the server answers with comes back as the same error class (``corral.errors.error_from``),
so the agent handles a remote ``NotFound`` or ``NotAssigned`` as it would an in-process one.

"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path
from typing import Any

import httpx

from corral.errors import ControlPlaneUnavailable, InvalidRequest, error_from
from corral.link.protocol import LINK_PREFIX
from corral.model.lb import NodeLbRules
from corral.model.metrics import MetricsReport
from corral.model.records import GroupRecord, NodeInfo
from corral.model.status import GroupStatus
from corral.net.dns.feed import DnsUpdate
from corral.net.vnet.config import VnetConf
from corral.net.vnet.nsg import SecurityRule

log = logging.getLogger(__name__)

CALL_TIMEOUT = 10.0
HEARTBEAT_TIMEOUT = 1.0
CONNECT_TIMEOUT = 0.5  # a server that does not take the connection this fast is skipped for the next


def raise_for(resp: httpx.Response) -> None:
    """Raise the error a Corral server answered with, as its own class."""
    if resp.status_code < 400:
        return
    try:
        err = resp.json()["error"]
        raise error_from(err.get("code", "Error"), resp.status_code, err.get("message", resp.text))
    except (ValueError, KeyError, TypeError):
        raise error_from("Error", resp.status_code, resp.text[:500]) from None


class HttpLink:
    def __init__(self, servers: list[str], token: str, ca_file: Path) -> None:
        if not servers:
            raise InvalidRequest("at least one server URL is needed (--server https://HOST:PORT)")
        self.servers = [s.rstrip("/") for s in servers]
        trust = ssl.create_default_context(cafile=str(ca_file))
        self._clients = [
            httpx.Client(base_url=s + LINK_PREFIX, verify=trust, headers={"Authorization": f"Bearer {token}"},
                         timeout=httpx.Timeout(CALL_TIMEOUT, connect=CONNECT_TIMEOUT),
                         limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
            for s in self.servers
        ]
        self._current = 0
        # What the last wait of a thread brought along: the agent's loop then needs no assignment call.
        self._fresh = threading.local()

    def close(self) -> None:
        for c in self._clients:
            c.close()

    def call(self, name: str, body: dict[str, Any], timeout: float = CALL_TIMEOUT) -> Any:
        """POST ``body`` to the route ``name`` of the first server that answers; its JSON answer."""
        first = self._current
        last: Exception | None = None
        for i in range(len(self._clients)):
            idx = (first + i) % len(self._clients)
            try:
                resp = self._clients[idx].post(f"/{name}", json=body,
                                               timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT))
            except httpx.TransportError as exc:
                last = exc
                continue
            if resp.status_code in (502, 503, 504) and i + 1 < len(self._clients):
                last = error_from("ServiceUnavailable", resp.status_code, resp.text[:200])
                continue
            self._current = idx
            raise_for(resp)
            return resp.json()
        raise ControlPlaneUnavailable(f"no control-plane server answered ({', '.join(self.servers)}): {last}")

    # ControlPlaneLink ---------------------------------------------------------
    def register(self, node: NodeInfo) -> None:
        self.call("register", node.model_dump(mode="json"))

    def heartbeat(self, node: str, hold: float = 0.0) -> None:
        self.call("heartbeat", {"node": node, "hold": hold}, timeout=HEARTBEAT_TIMEOUT)

    def assignments(self, node: str) -> tuple[int, dict[str, GroupRecord]]:
        data = self.call("assignments", {"node": node})
        return data["revision"], {k: GroupRecord.model_validate(v) for k, v in data["groups"].items()}

    def wait(self, node: str, after: int, timeout: float) -> tuple[int, set[str] | None]:
        self._fresh.records = {}
        data = self.call("wait", {"node": node, "after": after, "timeout": timeout}, timeout=timeout + CALL_TIMEOUT)
        if data["keys"] is None:
            return data["revision"], None
        self._fresh.records = {k: GroupRecord.model_validate(v) if v is not None else None
                               for k, v in data["keys"].items()}
        return data["revision"], set(data["keys"])

    def assignment(self, node: str, key: str) -> GroupRecord | None:
        fresh: dict[str, GroupRecord | None] = getattr(self._fresh, "records", {})
        if key in fresh:
            return fresh.pop(key)
        data = self.call("assignment", {"node": node, "key": key})
        return GroupRecord.model_validate(data["group"]) if data["group"] is not None else None

    def last_status(self, key: str, uid: str) -> GroupStatus | None:
        data = self.call("last-status", {"key": key, "uid": uid})
        return GroupStatus.model_validate(data["status"]) if data["status"] is not None else None

    def report(self, key: str, status: GroupStatus) -> None:
        self.call("report", {"key": key, "status": status.model_dump(mode="json")})

    def release(self, key: str, uid: str) -> None:
        self.call("release", {"key": key, "uid": uid})

    def vnet_config_for(self, node: str, subnet_id: str | None) -> VnetConf:
        return VnetConf.model_validate(self.call("vnet-config", {"node": node, "subnetId": subnet_id}))

    def group_rules(self, key: str, nsg_id: str, subnet_id: str | None) -> list[SecurityRule]:
        data = self.call("group-rules", {"key": key, "nsgId": nsg_id, "subnetId": subnet_id})
        return [SecurityRule.model_validate(r) for r in data["rules"]]

    def report_metrics(self, report: MetricsReport) -> None:
        self.call("report-metrics", report.model_dump(mode="json"))

    def dns_changes(self, after: int, timeout: float) -> DnsUpdate:
        data = self.call("dns-changes", {"after": after, "timeout": timeout}, timeout=timeout + CALL_TIMEOUT)
        return DnsUpdate.model_validate(data)

    def load_balancer_rules(self, node: str) -> NodeLbRules:
        return NodeLbRules.model_validate(self.call("load-balancer-rules", {"node": node}))

    def report_load_balancers(self, node: str, revision: int) -> None:
        self.call("report-load-balancers", {"node": node, "revision": revision})
