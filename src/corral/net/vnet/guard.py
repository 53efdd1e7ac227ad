"""Anti-spoofing on a network's bridge: a sandbox sends only as itself (nftables, bridge family).

Every source-based decision (security rules, peering admission, forwarded traffic) trusts the source
address of a packet, so a sandbox may send only from its own IPv4 address and MAC, as Azure drops spoofed
traffic from a NIC. One table per network on the node, its ports known by interface index:

  table bridge cvn-<tag>
    set members  { iif }                              the host ends of the network's sandbox veths
    set ports    { iif . ether_addr . ipv4_addr }     each one's MAC and address
    set routers  { iif . ether_addr }                 sandboxes a route table names as a next hop
    set spoofers { iifname, dynamic, counter }        drops per port (an entry expires 1 h after its last)
    chain guard (bridge prerouting, before br_netfilter and conntrack see the frame)
      from a port of another bridge                              accept
      IPv4 from the port's own MAC and address                   accept
      IPv4 from a router's own MAC, any source but the gateway   accept
      ARP (Ethernet/IPv4) whose frame and sender MAC and sender
        address are the port's own                               accept
      other IPv4 or ARP: spoofed                                 counted (spoofers, `spoofed`), drop
      anything else (IPv6, VLAN tags, other ethertypes)          counted (`other`), drop

A router is a sandbox whose address is the ``VirtualAppliance`` next hop of a route in force on this node
(``routers``): it forwards packets whose source is not its own. ADD adds the port's elements over netlink
(``nftset``, ~30 us). DEL leaves them: keyed by an interface index the kernel does not hand out again, they
can never match another port, and removing an element would cost the kernel an RCU grace period (~16 ms);
the next ``rebuild`` (the network's set-up changed, or a GC) drops them. ``rebuild`` writes the table whole
from the attachment records, under the node lock, as ADD adds elements.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from dataclasses import dataclass, field

from corral.errors import NetworkError
from corral.net.vnet import nftset
from corral.net.vnet.attachments import Attachment
from corral.net.vnet.config import VnetConf

VERSION = 1  # part of the node set-up's stamp: a change rebuilds the table on every node
SPOOFER_TIMEOUT = "1h"


def table(conf: VnetConf) -> str:
    return f"cvn-{conf.tag}"


def routers(conf: VnetConf) -> set[str]:
    """Addresses in this node's block that a route in force names as a VirtualAppliance next hop: the
    subnet's own route table, or any table associated with a subnet (``applianceRoutes``)."""
    hops = {r.next_hop_ip for r in conf.routes if r.next_hop_type == "VirtualAppliance"}
    hops |= {a.next_hop_ip for a in conf.appliance_routes}
    block = conf.ipam.block_net
    return {h for h in hops if h and ipaddress.IPv4Address(h) in block}


def admit(conf: VnetConf, att: Attachment) -> None:
    """Let the attachment's port send as itself (and forward, if it is a router); idempotent."""
    port = nftset.iface_index(socket.if_nametoindex(att.host_veth))
    mac = nftset.ether(att.mac)
    elements = {"members": [port], "ports": [port + mac + nftset.ipv4(att.ip)]}
    if att.ip in routers(conf):
        elements["routers"] = [port + mac]
    nftset.add(table(conf), elements)


def _script(conf: VnetConf, atts: list[Attachment]) -> str:
    t, gw = f"bridge {table(conf)}", str(conf.ipam.gateway_ip)
    is_router = routers(conf)
    index: dict[str, int] = {}
    for a in atts:
        try:
            index[a.host_veth] = socket.if_nametoindex(a.host_veth)
        except OSError:
            continue  # its veth is gone (the sandbox is being deleted): nothing to admit
    live = [a for a in atts if a.host_veth in index]
    members = sorted({str(index[a.host_veth]) for a in live})
    ports = sorted(f"{index[a.host_veth]} . {a.mac} . {a.ip}" for a in live)
    routed = sorted(f"{index[a.host_veth]} . {a.mac}" for a in live if a.ip in is_router)
    arp = "arp htype 1 arp ptype ip arp hlen 6 arp plen 4"
    lines = [
        f"add table {t}",
        f"add counter {t} spoofed",
        f"add counter {t} other",
        f"add set {t} members {{ type iface_index; }}",
        f"add set {t} ports {{ type iface_index . ether_addr . ipv4_addr; }}",
        f"add set {t} routers {{ type iface_index . ether_addr; }}",
        f"add set {t} spoofers {{ type ifname; flags dynamic,timeout; timeout {SPOOFER_TIMEOUT}; counter; }}",
        f"add chain {t} guard {{ type filter hook prerouting priority -200; policy accept; }}",
        f"flush chain {t} guard",
        *[f"flush set {t} {s}" for s in ("members", "ports", "routers")],
        f"add rule {t} guard meta iif != @members accept",
        f"add rule {t} guard ether type ip meta iif . ether saddr . ip saddr @ports accept",
        f"add rule {t} guard ether type ip ip saddr != {gw} meta iif . ether saddr @routers accept",
        f"add rule {t} guard ether type arp {arp} meta iif . ether saddr . arp saddr ip @ports "
        "meta iif . arp saddr ether . arp saddr ip @ports accept",
        f"add rule {t} guard ether type {{ ip, arp }} update @spoofers {{ iifname }} counter name spoofed drop",
        f"add rule {t} guard counter name other drop",
    ]
    for name, elems in (("members", members), ("ports", ports), ("routers", routed)):
        if elems:
            lines.append(f"add element {t} {name} {{ {', '.join(elems)} }}")
    return "\n".join(lines) + "\n"


def _nft(*args: str, script: str | None = None) -> str:
    try:
        proc = subprocess.run(["nft", *args], input=script, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise NetworkError("nft (the nftables package) is not installed: corral-vnet needs it for anti-spoofing "
                           "(`make system-packages`)") from None
    if proc.returncode != 0:
        raise NetworkError(f"nft {' '.join(args)} failed: {proc.stderr.strip()}"
                           + (f"\n--- input ---\n{script}" if script else ""))
    return proc.stdout


def rebuild(conf: VnetConf, atts: list[Attachment]) -> None:
    """Make the network's table exactly what ``atts`` (every attachment on the node) and the routes ask,
    in one transaction; the drop counts are kept. Caller holds the node lock."""
    _nft("-f", "-", script=_script(conf, atts))


def teardown(conf: VnetConf) -> None:
    t = f"bridge {table(conf)}"
    _nft("-f", "-", script=f"add table {t}\ndelete table {t}\n")


@dataclass
class Drops:
    """What the guard dropped on this node: spoofed IPv4/ARP (in all, and per host veth still counted) and
    other frames (non-IPv4 traffic a sandbox sent)."""

    spoofed: int = 0
    other: int = 0
    by_port: dict[str, int] = field(default_factory=dict)


def drops(conf: VnetConf) -> Drops:
    doc = json.loads(_nft("-j", "list", "table", "bridge", table(conf)))
    out = Drops()
    for item in doc.get("nftables", []):
        if "counter" in item and item["counter"]["name"] in ("spoofed", "other"):
            setattr(out, item["counter"]["name"], int(item["counter"]["packets"]))
        elif "set" in item and item["set"]["name"] == "spoofers":
            for e in item["set"].get("elem", []):
                elem = e.get("elem", {})
                out.by_port[str(elem.get("val"))] = int(elem.get("counter", {}).get("packets", 0))
    return out
