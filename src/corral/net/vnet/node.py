"""A virtual network's footprint on one node: bridge, gateway, routes to other nodes' blocks, iptables chains,
peered networks, its route table (``routing``), the anti-spoofing guard of its bridge (``guard``).

``ensure`` is cheap when nothing changed: a stamp of the applied settings is kept
under the network's data dir (and in memory for the in-process agent), so the
hot ADD path does the full set-up only on a node's first ADD or after a change.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from corral.fileio import atomic_write
from corral.net.vnet import attachments, firewall, guard, netops, routing
from corral.net.vnet.config import VnetConf
from corral.net.vnet.nsg import SecurityRule

_mem_lock = threading.Lock()
_thread_locks: dict[str, threading.Lock] = {}
# net_dir -> (stamp, bridge index, bridge mac, complete: every appliance route could be installed)
_mem_stamps: dict[str, tuple[str, int, str, bool]] = {}


def names(conf: VnetConf) -> firewall.Names:
    return firewall.Names(tag=conf.tag, bridge=conf.bridge_name)


def _stamp(conf: VnetConf) -> str:
    ipam = conf.ipam
    doc = {
        "bridge": conf.bridge_name, "mtu": conf.mtu, "snat": conf.snat, "spaces": ipam.spaces,
        "block": ipam.node_block, "gw": str(ipam.gateway_ip),
        "peers": sorted((p.block, p.via) for p in ipam.peers),
        "peerings": sorted(pn.model_dump_json(by_alias=True) for pn in conf.peerings),
        "routes": routing.route_doc(conf.routes),
        "appliances": sorted(a.model_dump_json(by_alias=True) for a in conf.appliance_routes),
        "guard": guard.VERSION,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _stamp_file(conf: VnetConf) -> Path:
    return conf.net_dir / "node.json"


def ensure(conf: VnetConf, retry: bool = False) -> tuple[int, str]:
    """Set up (or repair) the node side of the vnet; returns the bridge's (ifindex, mac).

    ``retry``: also try again a set-up left incomplete (an appliance on a bridge of this node that
    was not there yet); the hot path (ADD) never pays for that.
    """
    stamp = _stamp(conf)
    key = str(conf.net_dir)
    with _mem_lock:
        hit = _mem_stamps.get(key)
    if hit is not None and hit[0] == stamp and (hit[3] or not retry):
        return hit[1], hit[2]
    conf.net_dir.mkdir(parents=True, exist_ok=True)
    with node_lock(conf):
        return _ensure_locked(conf, stamp, key)


@contextmanager
def node_lock(conf: VnetConf) -> Iterator[None]:
    """Serialises node-level changes (set-up, rules, host ports) across threads and processes."""
    conf.net_dir.mkdir(parents=True, exist_ok=True)
    with _mem_lock:
        tlock = _thread_locks.setdefault(str(conf.net_dir), threading.Lock())
    with tlock:
        fd = os.open(conf.net_dir / "node.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _ensure_locked(conf: VnetConf, stamp: str, key: str) -> tuple[int, str]:
    try:
        on_disk = json.loads(_stamp_file(conf).read_text())
    except (FileNotFoundError, ValueError):
        on_disk = {}
    if on_disk.get("stamp") == stamp and on_disk.get("complete", True) and netops.bridge_exists(conf.bridge_name):
        idx, mac = netops.ensure_bridge(conf.bridge_name, _gw(conf), conf.mtu)
        complete = True
    else:
        # Re-applying an incomplete set-up of the same stamp finds no change: nothing is cut again.
        idx, mac, complete = _apply(conf, on_disk)
        body = {"stamp": stamp, "complete": complete, "peers": [p.block for p in conf.ipam.peers],
                "peerMetric": peer_metric(conf), "spaces": conf.ipam.spaces, "peered": conf.peered_prefixes,
                "forwarded": _admitted(conf), "routes": routing.route_doc(conf.routes)}
        _write_json(_stamp_file(conf), body)
    with _mem_lock:
        _mem_stamps[key] = (stamp, idx, mac, complete)
    return idx, mac


def _gw(conf: VnetConf) -> tuple[str, int]:
    return str(conf.ipam.gateway_ip), conf.ipam.block_net.prefixlen


def peer_metric(conf: VnetConf) -> int:
    """The metric of the network's main-table routes to other nodes' blocks: its own, so subnets of one
    virtual network on this node each hold their route to a block they share (``netops.set_main_routes``)."""
    return 0x1000 + int(conf.tag, 16) % (1 << 30)


def _admitted(conf: VnetConf) -> list[str]:
    return [p for p, admitted in routing.forwarded_sources(conf) if admitted]


def _apply(conf: VnetConf, before: dict[str, Any]) -> tuple[int, str, bool]:
    """Everything of the network on this node; ``before`` is what the last set-up applied.
    Returns (bridge index, bridge mac, whether every appliance route could be installed)."""
    idx, mac = netops.ensure_bridge(conf.bridge_name, _gw(conf), conf.mtu)
    netops.write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")
    # Lets 127.0.0.1:<host port> be DNAT'd to a sandbox (in-process host ports).
    netops.write_sysctl(f"/proc/sys/net/ipv4/conf/{conf.bridge_name}/route_localnet", "1")
    if before and "peerMetric" not in before:  # set up by a version that shared one route per block
        for block in before.get("peers", []):
            netops.delete_legacy_route(block)
    netops.set_main_routes({p.block: p.via for p in conf.ipam.peers}, peer_metric(conf))
    direct = [r.address_prefix for r in conf.routes if r.next_hop_type == "VirtualAppliance"]
    firewall.ensure_node(names(conf), conf.ipam.spaces, conf.ipam.node_block, conf.snat,
                         peered=conf.peered_prefixes, direct=direct, forwarded=routing.forwarded_sources(conf))
    apply_security(conf)
    guard.rebuild(conf, attachments.every(conf))  # the routers may have changed with the routes
    complete = routing.apply_host(conf)
    old_routes: list[list[str | None]] = before.get("routes", [])
    new_routes = routing.route_doc(conf.routes)
    if old_routes != new_routes:
        routing.apply_sandboxes(conf)
    # Connections the change no longer allows (a peering gone, traffic re-routed) must not linger in
    # conntrack, where the established-flow rules would keep them alive.
    gone = set(before.get("peered", [])) - set(conf.peered_prefixes)
    gone |= set(before.get("spaces", [])) - set(conf.ipam.spaces)
    gone |= set(before.get("forwarded", [])) - set(_admitted(conf))
    moved = {str(r[0]) for r in [*old_routes, *new_routes] if (r in old_routes) != (r in new_routes)}
    routing.cut_flows(conf.ipam.node_block, sorted(gone | moved))
    return idx, mac, complete


def forget(conf: VnetConf) -> None:
    with _mem_lock:
        _mem_stamps.pop(str(conf.net_dir), None)


# ---- security rules --------------------------------------------------------------


def _nsg_dir(conf: VnetConf) -> Path:
    return conf.net_dir / "nsg"


def vnet_rules(conf: VnetConf) -> list[SecurityRule]:
    """The vnet-level rules: the live set if one was written, else the config's."""
    f = _nsg_dir(conf) / "_vnet.json"
    try:
        return [SecurityRule.model_validate(r) for r in json.loads(f.read_text())]
    except FileNotFoundError:
        return list(conf.security_rules)


def _write_json(path: Path, doc: object) -> None:
    atomic_write(path, json.dumps(doc), durable=False)


def set_vnet_rules(conf: VnetConf, rules: list[SecurityRule]) -> None:
    _write_json(_nsg_dir(conf) / "_vnet.json", [r.model_dump(by_alias=True) for r in rules])


def set_sandbox_rules(conf: VnetConf, key: str, ip: str, rules: list[SecurityRule]) -> None:
    f = _nsg_dir(conf) / f"{key}.json"
    if rules:
        _write_json(f, {"ip": ip, "rules": [r.model_dump(by_alias=True) for r in rules]})
    else:
        f.unlink(missing_ok=True)


def has_sandbox_rules(conf: VnetConf, key: str) -> bool:
    return (_nsg_dir(conf) / f"{key}.json").exists()


def apply_security(conf: VnetConf) -> None:
    sandboxes: dict[str, firewall.SandboxRules] = {}
    d = _nsg_dir(conf)
    if d.is_dir():
        for f in d.iterdir():
            if f.name.startswith(("_", ".")) or f.suffix != ".json":
                continue
            doc = json.loads(f.read_text())
            sandboxes[f.stem] = firewall.SandboxRules(
                ip=doc["ip"], rules=[SecurityRule.model_validate(r) for r in doc["rules"]])
    firewall.apply_rules(names(conf), vnet_rules(conf), sandboxes)


def teardown(conf: VnetConf) -> None:
    """Remove the vnet from this node: chains, routes, bridge, state. Sandboxes must be gone."""
    forget(conf)
    routing.teardown_host(conf)
    guard.teardown(conf)
    firewall.teardown_node(names(conf), conf.ipam.node_block)
    netops.set_main_routes({}, peer_metric(conf))
    netops.delete_link(conf.bridge_name)
