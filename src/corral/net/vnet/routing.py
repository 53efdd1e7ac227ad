"""A virtual network's routes on a node: peered networks' blocks, its route table, appliances it hosts.

Everything here is policy routing keyed by the network's bridge, in tables derived from its tag
(``table_base``), so networks never share a route and each one's state is found again from the
kernel alone (no record of what was installed):

  rule 9000   from S to P iif <bridge> goto 10000  an appliance here forwarded it: route it on
  rule 9001   from S to P lookup base+2+k          subnet S's route table sends P to appliance k here
  rule 10000  iif <bridge> lookup base             the route table: its routes (metric 0) over
                                                   ``throw`` for the network's own and peered address
                                                   spaces (metric 10): the longest prefix wins, and
                                                   on a tie the route table, as in Azure
  rule 10001  iif <bridge> lookup base+1           peered networks' blocks on other nodes, via them

A packet no table decides falls through to ``main`` (the network's own blocks, local bridges).
What an appliance of a peered network forwards here keeps its original source; the firewall admits
it by the way the replies go (``forwarded_sources``).
Inside every sandbox the route table is mirrored with protocol ``netops.RT_PROTO`` routes
(``unreachable P`` for None, ``P via <gateway>`` otherwise), so a group sees its routes and a
dropped prefix fails at once; the node's tables are what enforce them.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path

from pyroute2.iproute.linux import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from corral.net.vnet import attachments, netops
from corral.net.vnet.config import ApplianceRoute, Route, VnetConf

log = logging.getLogger(__name__)

PRIO_DUTY_SKIP, PRIO_DUTY, PRIO_ROUTES, PRIO_PEERS = 9000, 9001, 10000, 10001
TABLE_SPAN = 64  # tables per network: routes, peers, then one per appliance hosted here
SYSTEM_METRIC = 10
_RTN = {"unicast": 1, "blackhole": 6, "unreachable": 7, "throw": 9}
_RTN_NAME = {v: k for k, v in _RTN.items()}


def table_base(tag: str) -> int:
    return 0x40000000 + (int(tag, 16) % (1 << 24)) * TABLE_SPAN


@dataclass(frozen=True)
class RuleSpec:
    priority: int
    table: int = 0
    iif: str | None = None
    src: str | None = None
    dst: str | None = None
    goto: int | None = None


@dataclass(frozen=True)
class RouteSpec:
    table: int
    dst: str
    kind: str  # unicast | blackhole | throw
    gateway: str | None = None
    metric: int = 0


def _within(ip: str, block: str) -> bool:
    return ipaddress.IPv4Address(ip) in ipaddress.IPv4Network(block)


def next_hop(conf: VnetConf, ip: str) -> str:
    """Where this node sends traffic for the appliance ``ip``: the appliance itself when it is on
    this node (the bridge, or another local bridge), else the node holding its block."""
    for p in [*conf.ipam.peers, *(p for pn in conf.peerings for p in pn.peers)]:
        if _within(ip, p.block):
            return p.via
    return ip


def _in_reach(conf: VnetConf, ip: str | None) -> bool:
    """Whether ``ip`` lies in the network's own or a peered address space (so it may appear on this node)."""
    return ip is not None and any(_within(ip, p) for p in [*conf.ipam.spaces, *conf.peered_prefixes])


def _duties(conf: VnetConf) -> list[ApplianceRoute]:
    """The appliance routes whose appliance is in this node's block: this node hands their traffic to it."""
    return [d for d in conf.appliance_routes if _within(d.next_hop_ip, conf.ipam.node_block)]


def plan(conf: VnetConf) -> tuple[list[RuleSpec], list[RouteSpec]]:
    """The rules and routes the network wants on this node (pure)."""
    base, bridge = table_base(conf.tag), conf.bridge_name
    rules: list[RuleSpec] = []
    routes: list[RouteSpec] = []
    duties = _duties(conf)
    if conf.routes or duties:  # with duties the rule is also their `goto` target
        rules.append(RuleSpec(PRIO_ROUTES, base, iif=bridge))
    for r in conf.routes:
        if r.next_hop_type == "None":
            routes.append(RouteSpec(base, r.address_prefix, "blackhole"))
        elif r.next_hop_type == "VirtualAppliance":
            assert r.next_hop_ip is not None
            routes.append(RouteSpec(base, r.address_prefix, "unicast", next_hop(conf, r.next_hop_ip)))
        else:  # VnetLocal, Internet: the node's own routing decides
            routes.append(RouteSpec(base, r.address_prefix, "throw"))
    if conf.routes:
        for space in [*conf.ipam.spaces, *conf.peered_prefixes]:
            routes.append(RouteSpec(base, space, "throw", metric=SYSTEM_METRIC))
    peer_blocks = [p for pn in conf.peerings for p in pn.peers]
    if peer_blocks:
        rules.append(RuleSpec(PRIO_PEERS, base + 1, iif=bridge))
        routes += [RouteSpec(base + 1, p.block, "unicast", p.via) for p in peer_blocks]
    appliances = sorted({d.next_hop_ip for d in duties}, key=ipaddress.IPv4Address)[: TABLE_SPAN - 2]
    for d in duties:
        if d.next_hop_ip not in appliances:
            log.warning("network %s: too many appliances on this node; %s is not served", conf.name, d.next_hop_ip)
            continue
        table = base + 2 + appliances.index(d.next_hop_ip)
        rules.append(RuleSpec(PRIO_DUTY_SKIP, iif=bridge, src=d.source_prefix, dst=d.address_prefix,
                              goto=PRIO_ROUTES))
        rules.append(RuleSpec(PRIO_DUTY, table, src=d.source_prefix, dst=d.address_prefix))
        routes.append(RouteSpec(table, d.address_prefix, "unicast", d.next_hop_ip))
    return list(dict.fromkeys(rules)), list(dict.fromkeys(routes))


def forwarded_sources(conf: VnetConf) -> list[tuple[str, bool]]:
    """Traffic forwarded by an appliance of a peered network (its source is outside both networks) that
    this network admits: (source prefix, admitted), longest prefix first, up to the last admitted one.

    At this node such a packet carries only its original source, so it is known by the way its replies
    go: a source is forwarded by peer P when the route table sends that source's prefix to a
    VirtualAppliance in P's address space (the longest prefix decides, as for the replies), and it is
    admitted when this side's peering with P has ``allowForwardedTraffic``, as in Azure.
    """
    allowing = [p for pn in conf.peerings if pn.allow_forwarded_traffic for p in pn.address_prefixes]
    out: list[tuple[str, bool]] = []
    for r in sorted(conf.routes, key=lambda r: -ipaddress.IPv4Network(r.address_prefix).prefixlen):
        hop = r.next_hop_ip if r.next_hop_type == "VirtualAppliance" else None
        out.append((r.address_prefix, hop is not None and any(_within(hop, p) for p in allowing)))
    while out and not out[-1][1]:
        out.pop()
    return out


# ---- the node -----------------------------------------------------------------------


def _net(addr: str | None, plen: int) -> str | None:
    return None if addr is None else f"{addr}/{plen}"


def _rule_spec(msg: object) -> RuleSpec:
    m = msg  # a pyroute2 fibmsg
    return RuleSpec(priority=m.get_attr("FRA_PRIORITY") or 0, table=m.get_attr("FRA_TABLE") or 0,  # type: ignore[attr-defined]
                    iif=m.get_attr("FRA_IIFNAME"), src=_net(m.get_attr("FRA_SRC"), m["src_len"]),  # type: ignore[attr-defined,index]
                    dst=_net(m.get_attr("FRA_DST"), m["dst_len"]), goto=m.get_attr("FRA_GOTO"))  # type: ignore[attr-defined,index]


def _rule_args(r: RuleSpec) -> dict[str, object]:
    args: dict[str, object] = {"priority": r.priority, "family": netops.AF_INET}
    if r.goto is not None:
        args |= {"action": "goto", "goto": r.goto}
    else:
        args["table"] = r.table
    if r.iif:
        args["iifname"] = r.iif
    for key, val in (("src", r.src), ("dst", r.dst)):
        if val:
            addr, _, plen = val.partition("/")
            args |= {key: addr, f"{key}_len": int(plen)}
    return args


def _route_args(r: RouteSpec) -> dict[str, object]:
    args: dict[str, object] = {"dst": r.dst, "table": r.table, "type": r.kind, "proto": netops.RT_PROTO}
    if r.metric:
        args["priority"] = r.metric
    if r.gateway:
        args["gateway"] = r.gateway
    return args


def _ours(r: RuleSpec, base: int, bridge: str) -> bool:
    return base <= r.table < base + TABLE_SPAN or (r.priority == PRIO_DUTY_SKIP and r.iif == bridge)


def apply_host(conf: VnetConf) -> bool:
    """Converge this node's rules and tables for the network; False when an appliance could not be
    reached yet (its traffic is dropped meanwhile, and a later call retries)."""
    rules, routes = plan(conf)
    base, complete = table_base(conf.tag), True
    with IPRoute() as ipr:
        for r in routes:
            try:
                ipr.route("replace", **_route_args(r))
            except NetlinkError as exc:
                if exc.code not in (errno.ENETUNREACH, errno.EINVAL):
                    raise
                # The appliance is nowhere this node can reach: fail closed.
                log.warning("network %s: next hop %s for %s is unreachable; dropping that traffic",
                            conf.name, r.gateway, r.dst)
                ipr.route("replace", **_route_args(RouteSpec(r.table, r.dst, "blackhole", None, r.metric)))
                # On a bridge of this node not set up yet (another subnet's network)? Then try again later.
                complete = complete and not _in_reach(conf, r.gateway)
        have = [_rule_spec(m) for m in ipr.get_rules(family=netops.AF_INET)]
        ours = [r for r in have if _ours(r, base, conf.bridge_name)]
        for r in rules:
            if r not in ours:
                ipr.rule("add", **_rule_args(r))
        for r in ours:
            if r not in rules:
                netops.ignore_gone(ipr.rule, "del", **_rule_args(r))
        keep = {(r.table, r.dst, r.metric) for r in routes}
        for m in ipr.get_routes(family=netops.AF_INET):
            table = m.get_attr("RTA_TABLE")
            if not (base <= table < base + TABLE_SPAN):
                continue
            dst, metric = netops.route_dst(m), m.get_attr("RTA_PRIORITY") or 0
            if (table, dst, metric) not in keep:
                netops.ignore_gone(ipr.route, "del", dst=dst, table=table, priority=metric,
                                   type=_RTN_NAME.get(m["type"], "unicast"))
    if _duties(conf):
        # What an appliance here forwards arrives on the bridge from sources routed elsewhere.
        netops.write_sysctl(f"/proc/sys/net/ipv4/conf/{conf.bridge_name}/rp_filter", "2")
    return complete


def teardown_host(conf: VnetConf) -> None:
    """Remove every rule and table route of the network from this node."""
    apply_host(conf.model_copy(update={"routes": [], "peerings": [], "appliance_routes": []}))


# ---- inside sandboxes -------------------------------------------------------------------


def sandbox_routes(conf: VnetConf) -> list[tuple[str, bool]]:
    """(prefix, dropped) for every route of the table a sandbox mirrors. The block's own prefix is
    left out: its addresses are on the bridge, and the connected route must stay."""
    return [(r.address_prefix, r.next_hop_type == "None") for r in conf.routes
            if r.address_prefix != conf.ipam.node_block]


def sandbox_route_args(routes: list[tuple[str, bool]], gateway: str) -> list[dict[str, object]]:
    """pyroute2 ``route("replace", ...)`` arguments of a sandbox's mirrored routes."""
    return [{"dst": dst, "proto": netops.RT_PROTO, **({"type": "unreachable"} if dropped else {"gateway": gateway})}
            for dst, dropped in routes]


def apply_sandbox(netns: str, gateway: str, routes: list[tuple[str, bool]]) -> None:
    """Make the sandbox's Corral routes exactly ``routes`` (its default route is kept or restored)."""

    def work() -> None:
        with IPRoute() as ipr:
            want = dict(routes)
            for m in ipr.get_routes(family=netops.AF_INET, table=netops.MAIN_TABLE):
                if m["proto"] != netops.RT_PROTO:
                    continue
                dst = netops.route_dst(m)
                if dst not in want and dst != "0.0.0.0/0":
                    netops.ignore_gone(ipr.route, "del", dst=dst, type=_RTN_NAME.get(m["type"], "unicast"))
            for args in sandbox_route_args(routes, gateway):
                ipr.route("replace", **args)
            if "0.0.0.0/0" not in want:
                ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, proto=netops.RTPROT_BOOT)

    netops.in_netns(netns, work)


def apply_sandboxes(conf: VnetConf) -> None:
    """Mirror the route table into every sandbox of the network on this node (live)."""
    routes = sandbox_routes(conf)
    for att in attachments.every(conf):
        try:
            if Path(att.netns).exists():
                apply_sandbox(att.netns, att.gateway, routes)
        except FileNotFoundError:
            continue  # a sandbox going away meanwhile


def route_doc(routes: list[Route]) -> list[list[str | None]]:
    """A comparable form of the route table (what changed decides which flows are cut)."""
    return sorted([r.address_prefix, r.next_hop_type, r.next_hop_ip] for r in routes)


# ---- existing flows -----------------------------------------------------------------------


def cut_flows(local: str, remote: list[str]) -> int:
    """Forget the tracked connections between ``local`` and the ``remote`` prefixes, so the filter sees
    their next packets as new (and drops them unless they are still allowed). Returns how many."""
    if not remote:
        return 0
    from pyroute2.conntrack import Conntrack  # the executable skips pyroute2's package __init__

    here = ipaddress.IPv4Network(local)
    there = [ipaddress.IPv4Network(p) for p in remote]

    def inside(addr: str | None, nets: list[ipaddress.IPv4Network]) -> bool:
        try:
            a = ipaddress.ip_address(addr or "")
        except ValueError:
            return False
        return a.version == 4 and any(a in n for n in nets)

    cut = 0
    with Conntrack() as ct:
        for e in list(ct.dump_entries()):
            src, dst = e.tuple_orig.saddr, e.tuple_orig.daddr
            if (inside(src, [here]) and inside(dst, there)) or (inside(src, there) and inside(dst, [here])):
                try:
                    ct.delete(e)
                    cut += 1
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:
                        raise
    return cut
