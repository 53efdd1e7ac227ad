"""The two directions of the agent <-> control plane link, as protocols both sides import.

An agent sees only ``ControlPlaneLink``: its assignments (group records bound to its node), a way
to wait for them to change, and a place to report what it observes. The control plane reaches a
node for what is not desired state (logs, exec, attach, image cache) only through ``NodeClient``.
Neither side knows whether the other is in the same process or across the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

from corral.errors import CorralError
from corral.model.armids import LOAD_BALANCERS
from corral.model.lb import NodeLbRules
from corral.model.metrics import MetricsReport
from corral.model.records import GROUPS, NODE_BLOCKS, NSGS, ROUTE_TABLES, VNETS, GroupRecord, NodeInfo
from corral.model.status import GroupStatus

if TYPE_CHECKING:
    from corral.net.dns.feed import DnsUpdate
    from corral.net.vnet.config import VnetConf
    from corral.net.vnet.nsg import SecurityRule


# Where the servers answer the link's calls over HTTPS (``corral.link.routes``).
LINK_PREFIX = "/link/v1"
# What an agent follows: its groups, and what its networks are made of.
AGENT_PREFIXES = (GROUPS, VNETS, NSGS, NODE_BLOCKS, ROUTE_TABLES, LOAD_BALANCERS)
NETWORK_PREFIXES = (VNETS, NSGS, NODE_BLOCKS, ROUTE_TABLES)
LB_PREFIXES = (LOAD_BALANCERS, NODE_BLOCKS)  # a node block change can change a backend's source address


class ControlPlaneLink(Protocol):
    def register(self, node: NodeInfo) -> None:
        """The node as it is (capacity, labels, zone, endpoint); what the control plane decided of it
        (cordoned, draining) stays."""
        ...

    def heartbeat(self, node: str, hold: float = 0.0) -> None:
        """Renew the node's lease; returns once the renewal is recorded (raises when it could not be).

        ``hold``: seconds beyond the lease the node asks to be left alone (its agent is restarting)."""
        ...

    def assignments(self, node: str) -> tuple[int, dict[str, GroupRecord]]:
        """The groups bound to ``node`` now, and the revision to wait from."""
        ...

    def wait(self, node: str, after: int, timeout: float) -> tuple[int, set[str] | None]:
        """Keys changed since ``after`` (None: history lost, re-list), and the new revision.

        Group keys (under ``/groups/``) and network keys (virtual networks with their peerings,
        security groups, node blocks, route tables: the node re-reads its network configuration
        when one changes).
        """
        ...

    def assignment(self, node: str, key: str) -> GroupRecord | None:
        """The group at ``key`` if it is bound to ``node`` now, else None (gone, or another node's)."""
        ...

    def last_status(self, key: str, uid: str) -> GroupStatus | None: ...

    def report(self, key: str, status: GroupStatus) -> None:
        """Record what the node observes of the group at ``key``. Raises StaleBinding when the status
        describes an older binding (``status.epoch``) than one already recorded, and NotAssigned
        when the group is gone (or, over the network, bound to another node)."""
        ...

    def release(self, key: str, uid: str) -> None:
        """The agent removed everything of a deleted group: forget it."""
        ...

    def vnet_config_for(self, node: str, subnet_id: str | None) -> VnetConf:
        """The node's corral-vnet config for a subnet (None: the default network), granting a block."""
        ...

    def group_rules(self, key: str, nsg_id: str, subnet_id: str | None) -> list[SecurityRule]:
        """The security rules of the network security group that group ``key`` names ([] once it is gone).
        A remote node may ask only for a group bound to it, and only for the NSG that group names."""
        ...

    def report_metrics(self, report: MetricsReport) -> None:
        """CPU, memory and network usage of the node's running groups, every few seconds (lossy: never retried)."""
        ...

    def dns_changes(self, after: int, timeout: float) -> DnsUpdate:
        """What the node's DNS server answers from (``corral.net.dns.feed.DnsFeed``)."""
        ...

    def load_balancer_rules(self, node: str) -> NodeLbRules:
        """Every load-balancing rule the node applies (frontend -> backends), and the revision they were read at."""
        ...

    def report_load_balancers(self, node: str, revision: int) -> None:
        """The node now applies the load-balancer rules of ``revision``."""
        ...


class NodeUnavailable(CorralError):
    code = "NodeUnavailable"
    status = 503


class TerminalSession(Protocol):
    """An interactive process on a pty in a container (``corral.node.exec.PtySession`` has this shape)."""

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes | None:
        """Output; b"" once the process has exited and its output is drained; None on timeout."""
        ...

    def write(self, data: bytes) -> None: ...

    def resize(self, rows: int, cols: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if the process still runs after ``timeout``."""
        ...

    def close(self) -> None:
        """Hang up; the process gets SIGHUP and is killed if it lingers."""
        ...


class PortStream(Protocol):
    """A TCP connection the node opened to a group's address and port (``corral.node.client.TcpStream``)."""

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes | None:
        """Bytes from the group; b"" once it closed its side; None on timeout."""
        ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class NodeClient(Protocol):
    def logs(self, uid: str, container: str, tail: int | None, timestamps: bool) -> str: ...

    def follow_logs(
        self, uid: str, container: str, timestamps: bool, stop: Callable[[], bool], tail: int | None = None
    ) -> Iterator[str]:
        """Existing lines (the last ``tail``), then new ones as they are written, until ``stop()``."""
        ...

    def exec(self, uid: str, container: str, argv: list[str], timeout: float | None) -> tuple[int, bytes, bytes]: ...

    def exec_pty(self, uid: str, container: str, argv: list[str], rows: int, cols: int) -> TerminalSession:
        """Start ``argv`` in the running container on a new pty of rows x cols."""
        ...

    def attach(self, uid: str, container: str, stop: Callable[[], bool], tail: int | None = 0) -> Iterator[str]:
        """The container's output lines from now on, until it exits or ``stop()``."""
        ...

    def port_forward(self, uid: str, port: int) -> PortStream:
        """Connect from the node to ``port`` on the group's own address (its network namespace)."""
        ...

    def cached_images(self) -> list[str]: ...
