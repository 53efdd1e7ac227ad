"""Links, addresses and routes through netlink (pyroute2), on the host and inside sandboxes.

"Host" means the network namespace of the calling thread (the node's, or a test
host's). Work inside a sandbox runs on a fresh thread that setns()es into it:
namespaces are per thread, so nothing leaks back to the caller, and no helper
process is forked. A pyroute2 socket is bound to the thread that opened it, so
each one is opened and closed on the thread that uses it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from corral.errors import NetworkError
from corral.node.network import _libc, nsthread

T = TypeVar("T")

LOOPBACK_INDEX = 1  # the kernel registers lo first in every network namespace
RT_PROTO = 67  # the routing protocol number of every route Corral puts in place (``ip route ... proto 67``)
RTPROT_BOOT = 3  # what routes added without a protocol carry
AF_INET = 2
MAIN_TABLE = 254


def in_netns(netns_path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` on a fresh thread inside the network namespace at ``netns_path``."""
    return nsthread.in_namespace(netns_path, _libc.CLONE_NEWNET, fn, name="corral-vnet-ns")


def _first(ipr: IPRoute, name: str) -> int | None:
    idx = ipr.link_lookup(ifname=name)
    return idx[0] if idx else None


def _mac(ipr: IPRoute, index: int) -> str:
    return str(ipr.get_links(index)[0].get_attr("IFLA_ADDRESS"))


def write_sysctl(path: str, value: str) -> None:
    """Write a /proc/sys value (for the calling thread's network namespace)."""
    with open(path, "w") as f:
        f.write(value)


def ensure_bridge(name: str, gateway_cidr: tuple[str, int], mtu: int) -> tuple[int, str]:
    """The bridge, up, with the gateway address; created if missing. Returns (index, mac)."""
    with IPRoute() as ipr:
        idx = _first(ipr, name)
        if idx is None:
            try:
                ipr.link("add", ifname=name, kind="bridge", mtu=mtu)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # a concurrent ADD made it first
                    raise
            idx = _first(ipr, name)
            if idx is None:
                raise NetworkError(f"bridge {name} vanished while being created", target=name)
        addr, plen = gateway_cidr
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
        if addr not in have:
            try:
                ipr.addr("add", index=idx, address=addr, prefixlen=plen)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
        ipr.link("set", index=idx, state="up")
        return idx, _mac(ipr, idx)


def bridge_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return _first(ipr, name) is not None


def delete_link(name: str) -> bool:
    """Delete a link of the host; False when it was not there."""
    with IPRoute() as ipr:
        idx = _first(ipr, name)
        if idx is None:
            return False
        try:
            ipr.link("del", index=idx)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
            return False
        return True


def set_main_routes(routes: dict[str, str], metric: int) -> None:
    """Make the main table's Corral routes of metric ``metric`` exactly ``routes`` (block -> via).

    Each network of the node owns the metric it is given: two networks needing the same block (subnets of
    one virtual network) each hold a route to it, so removing one network's leaves the other's.
    """
    with IPRoute() as ipr:
        for m in ipr.get_routes(family=AF_INET, table=MAIN_TABLE):
            dst = route_dst(m)
            if m["proto"] == RT_PROTO and m.get_attr("RTA_PRIORITY") == metric and dst not in routes:
                ignore_gone(ipr.route, "del", dst=dst, table=MAIN_TABLE, priority=metric, proto=RT_PROTO)
        for dst, via in routes.items():
            ipr.route("replace", dst=dst, gateway=via, table=MAIN_TABLE, priority=metric, proto=RT_PROTO)


def delete_legacy_route(dst: str) -> None:
    """A main-table route to another node's block as set-ups before per-network metrics left it (proto boot)."""
    with IPRoute() as ipr:
        ignore_gone(ipr.route, "del", dst=dst, table=MAIN_TABLE, proto=RTPROT_BOOT)


def route_dst(m: Any) -> str:
    """A pyroute2 route message's destination as a prefix (``0.0.0.0/0`` for a default route)."""
    return f"{m.get_attr('RTA_DST') or '0.0.0.0'}/{m['dst_len']}"


def ignore_gone(fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """``fn(*args, **kwargs)``, a netlink deletion: what is already gone (ESRCH, ENOENT) is fine."""
    try:
        fn(*args, **kwargs)
    except NetlinkError as exc:
        if exc.code not in (errno.ESRCH, errno.ENOENT):
            raise


def random_mac() -> str:
    """A locally administered unicast MAC, as the kernel would pick (chosen here: no read-back needed)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def add_veth(host_name: str, netns_path: str, ifname: str, bridge: int, mtu: int) -> tuple[str, str]:
    """A veth pair: ``host_name`` on the bridge (up), ``ifname`` created inside the netns.

    One netlink request makes both ends, enslaves and raises the host end and sets
    both MACs (returned: host, sandbox). Each pyroute2 call costs ~0.4 ms of Python,
    more than the kernel's work, so the hot path makes as few as it can.
    """
    host_mac, peer_mac = random_mac(), random_mac()
    with IPRoute() as ipr:
        nsfd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            for retry in (False, True):
                try:
                    ipr.link("add", ifname=host_name, kind="veth", mtu=mtu, master=bridge, state="up",
                             address=host_mac,
                             peer={"ifname": ifname, "net_ns_fd": nsfd, "mtu": mtu, "address": peer_mac})
                    break
                except NetlinkError as exc:
                    old = _first(ipr, host_name) if exc.code == errno.EEXIST and not retry else None
                    if old is None:
                        raise
                    ipr.link("del", index=old)  # a retried ADD: start clean
        finally:
            os.close(nsfd)
    return host_mac, peer_mac


def host_link_master(host_name: str) -> int | None:
    """The master (bridge) index of a host link, or None when the link is missing."""
    with IPRoute() as ipr:
        idx = _first(ipr, host_name)
        if idx is None:
            return None
        return int(ipr.get_links(idx)[0].get_attr("IFLA_MASTER") or 0)


def configure_sandbox(netns_path: str, ifname: str, ip: str, prefix_len: int, gateway: str,
                      routes: list[dict[str, object]] | None = None) -> None:
    """Inside the sandbox: address, link up (and loopback), default route via the gateway, then
    ``routes`` (pyroute2 route arguments: the subnet's route table)."""

    def work() -> None:
        with IPRoute() as ipr:
            idx = _first(ipr, ifname)
            if idx is None:
                raise NetworkError(f"interface {ifname} missing in {netns_path}", target=ifname)
            ipr.addr("replace", index=idx, address=ip, prefixlen=prefix_len)
            ipr.link("set", index=idx, state="up")
            ipr.link("set", index=LOOPBACK_INDEX, state="up")
            ipr.route("replace", dst="0.0.0.0/0", gateway=gateway)
            for r in routes or []:
                ipr.route("replace", **r)

    in_netns(netns_path, work)


def sandbox_addresses(netns_path: str, ifname: str) -> list[str] | None:
    """``ip/prefix`` of ``ifname`` in the sandbox; None when the interface is missing."""

    def work() -> list[str] | None:
        with IPRoute() as ipr:
            idx = _first(ipr, ifname)
            if idx is None:
                return None
            return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=idx, family=2)]

    return in_netns(netns_path, work)


def delete_sandbox_link(netns_path: str, ifname: str) -> None:
    """Delete ``ifname`` inside the sandbox (its host peer goes with it); fine if absent."""

    def work() -> None:
        with IPRoute() as ipr:
            idx = _first(ipr, ifname)
            if idx is not None:
                ipr.link("del", index=idx)

    try:
        in_netns(netns_path, work)
    except FileNotFoundError:
        pass
