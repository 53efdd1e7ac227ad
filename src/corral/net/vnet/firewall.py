"""iptables state of a virtual network on a node, written with one iptables-restore per change.

filter table
  FORWARD -> CORRAL-VNET (first rule) -> CORRAL-VNET-OUT, CORRAL-VNET-IN, CORRAL-VNET-EGRESS
  CORRAL-VNET-OUT     ``-i <bridge> -j CVN-<tag>-OUT`` per vnet (returns unless a rule drops)
  CORRAL-VNET-IN      ``-o <bridge> -j CVN-<tag>-IN``  per vnet (ends in ACCEPT or DROP)
  CORRAL-VNET-EGRESS  ``-i <bridge> -j ACCEPT``        per vnet (what leaves the vnet)
  CVN-<tag>-IN        established -> NSG inbound -> from the vnet's address space or a peered network
                      -> forwarded by a peer's appliance (CVN-<tag>-FWD) -> DNAT'd (published ports)
                      -> allowed by a rule (mark) -> DROP. So nothing from outside the vnet, and
                      nothing from another (unpeered) vnet, reaches a sandbox unless a rule allows it.
  CVN-<tag>-FWD       sources routed to an appliance of a peer that may forward to us, longest prefix
                      first: ACCEPT, or RETURN where a longer prefix goes elsewhere.
  CVN-<tag>-NSGI/O    security rules: per-sandbox chains (CVS-<hash>-I/O) first, then the vnet's.
nat table
  POSTROUTING ``-s <block> -j CVN-<tag>-SNAT``: RETURN inside the vnet's address space, peered networks and
  prefixes routed to an appliance (they keep their source address), else MASQUERADE.
  PREROUTING/OUTPUT (local dst) ``-j CVN-<tag>-HP``: in-process host ports (DNAT), with
  POSTROUTING ``-j CVN-<tag>-HPM`` masquerading hairpin and loopback-sourced connections.

Per-vnet chains are rebuilt whole (declaring a chain in ``--noflush`` mode flushes it),
shared chains only get the jumps they lack, so every call converges.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field

from corral.errors import NetworkError
from corral.net.vnet.nsg import SecurityRule, rule_lines

ALLOW_MARK = "0x40000/0x40000"
_TOP = "CORRAL-VNET"
_GLOBAL = ("CORRAL-VNET-OUT", "CORRAL-VNET-IN", "CORRAL-VNET-EGRESS")


def save() -> dict[str, list[str]]:
    """``iptables-save`` split by table."""
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    tables: dict[str, list[str]] = {}
    cur: list[str] = []
    for line in out.splitlines():
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], [])
        elif line and not line.startswith("#") and line != "COMMIT":
            cur.append(line)
    return tables


def restore(text: str) -> None:
    proc = subprocess.run(["iptables-restore", "--noflush", "-w", "5"], input=text, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise NetworkError(f"iptables-restore failed: {proc.stderr.strip()}\n--- input ---\n{text}")


def _has_chain(lines: list[str], chain: str) -> bool:
    return any(line.split(" ", 1)[0] == f":{chain}" for line in lines)


def _has_rule(lines: list[str], rule: str) -> bool:
    return rule in lines


def sandbox_chain(key: str) -> str:
    return "CVS-" + hashlib.sha256(key.encode()).hexdigest()[:12]


@dataclass
class Names:
    tag: str
    bridge: str

    @property
    def vin(self) -> str:
        return f"CVN-{self.tag}-IN"

    @property
    def vout(self) -> str:
        return f"CVN-{self.tag}-OUT"

    @property
    def fwd(self) -> str:
        return f"CVN-{self.tag}-FWD"

    @property
    def nsgi(self) -> str:
        return f"CVN-{self.tag}-NSGI"

    @property
    def nsgo(self) -> str:
        return f"CVN-{self.tag}-NSGO"

    @property
    def snat(self) -> str:
        return f"CVN-{self.tag}-SNAT"

    @property
    def hp(self) -> str:
        return f"CVN-{self.tag}-HP"

    @property
    def hpm(self) -> str:
        return f"CVN-{self.tag}-HPM"


@dataclass
class HostPort:
    host_port: int
    container_port: int
    protocol: str
    ip: str
    owner: str


@dataclass
class SandboxRules:
    ip: str
    rules: list[SecurityRule] = field(default_factory=list)


def _jumps(n: Names, block: str, snat: bool) -> dict[str, list[tuple[str, str]]]:
    """(chain to create if missing, rule to add if missing) per table; the order is the add order."""
    filt = [
        ("", f"-A FORWARD -j {_TOP}"),
        *[("", f"-A {_TOP} -j {g}") for g in _GLOBAL],
        ("", f"-A CORRAL-VNET-OUT -i {n.bridge} -j {n.vout}"),
        ("", f"-A CORRAL-VNET-IN -o {n.bridge} -j {n.vin}"),
        ("", f"-A CORRAL-VNET-EGRESS -i {n.bridge} -j ACCEPT"),
    ]
    nat = [
        ("", f"-A PREROUTING -m addrtype --dst-type LOCAL -j {n.hp}"),
        ("", f"-A OUTPUT -m addrtype --dst-type LOCAL -j {n.hp}"),
        ("", f"-A POSTROUTING -j {n.hpm}"),
    ]
    if snat:
        nat.append(("", f"-A POSTROUTING -s {block} -j {n.snat}"))
    return {"filter": filt, "nat": nat}


def ensure_node(n: Names, spaces: list[str], block: str, snat: bool, peered: list[str] | tuple[str, ...] = (),
                direct: list[str] | tuple[str, ...] = (), forwarded: list[tuple[str, bool]] | None = None) -> None:
    """Create or repair the vnet's chains and jumps on this node (idempotent).

    ``spaces``: the vnet's address prefixes; ``peered``: address spaces of peered networks (admitted like
    the vnet's own, not masqueraded); ``direct``: more destinations reached with the sandbox's own address
    (appliance routes); ``forwarded``: (source prefix, admitted) longest first, traffic forwarded by a
    peer's appliance (``routing.forwarded_sources``).
    """
    cur = save()
    filt, nat = cur.get("filter", []), cur.get("nat", [])
    f_out: list[str] = ["*filter"]
    for chain in (_TOP, *_GLOBAL, n.nsgi, n.nsgo):
        if not _has_chain(filt, chain):
            f_out.append(f":{chain} - [0:0]")
    # Our own per-vnet chains: declared, hence flushed and rebuilt.
    f_out += [f":{n.vin} - [0:0]", f":{n.vout} - [0:0]", f":{n.fwd} - [0:0]"]
    f_out += [
        f"-A {n.vin} -j MARK --set-xmark 0x0/{ALLOW_MARK.split('/')[1]}",
        f"-A {n.vin} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {n.vin} -j {n.nsgi}",
        *[f"-A {n.vin} -s {p} -j ACCEPT" for p in spaces],
        *[f"-A {n.vin} -s {p} -j ACCEPT" for p in peered],
        *([f"-A {n.vin} -j {n.fwd}"] if forwarded else []),
        f"-A {n.vin} -m conntrack --ctstate DNAT -j ACCEPT",
        f"-A {n.vin} -m mark --mark {ALLOW_MARK} -j ACCEPT",
        f"-A {n.vin} -j DROP",
        f"-A {n.vout} -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
        f"-A {n.vout} -j {n.nsgo}",
        *[f"-A {n.fwd} -s {p} -j {'ACCEPT' if admitted else 'RETURN'}" for p, admitted in forwarded or []],
    ]
    jumps = _jumps(n, block, snat)
    for _, rule in jumps["filter"]:
        if not _has_rule(filt, rule):
            # FORWARD's jump goes first so a host's own FORWARD rules cannot bypass isolation.
            f_out.append(rule.replace("-A FORWARD", "-I FORWARD 1", 1))
    f_out.append("COMMIT")
    n_out = ["*nat", f":{n.hp} - [0:0]" if not _has_chain(nat, n.hp) else "",
             f":{n.hpm} - [0:0]" if not _has_chain(nat, n.hpm) else ""]
    if snat:
        n_out += [f":{n.snat} - [0:0]",
                  *[f"-A {n.snat} -d {p} -j RETURN" for p in dict.fromkeys([*spaces, *peered, *direct])],
                  f"-A {n.snat} -j MASQUERADE"]
    for _, rule in jumps["nat"]:
        if not _has_rule(nat, rule):
            n_out.append(rule)
    n_out.append("COMMIT")
    restore("\n".join(line for line in (*f_out, *n_out) if line) + "\n")


def apply_rules(n: Names, vnet_rules: list[SecurityRule], sandboxes: dict[str, SandboxRules]) -> None:
    """Rebuild the NSG chains atomically from the full rule set (live update)."""
    cur = save().get("filter", [])
    old = {line.split(" ", 1)[0][1:] for line in cur if line.startswith(":CVS-")}
    referenced_before = {line.rsplit(" ", 1)[-1] for line in cur
                         if line.startswith((f"-A {n.nsgi} ", f"-A {n.nsgo} "))}
    out = ["*filter", f":{n.nsgi} - [0:0]", f":{n.nsgo} - [0:0]"]
    body: list[str] = []
    keep: set[str] = set()
    for key, sb in sorted(sandboxes.items()):
        if not sb.rules:
            continue
        base = sandbox_chain(key)
        ci, co = f"{base}-I", f"{base}-O"
        keep |= {ci, co}
        out += [f":{ci} - [0:0]", f":{co} - [0:0]"]
        body += _level(ci, [r for r in sb.rules if r.direction == "Inbound"], inbound=True)
        body += _level(co, [r for r in sb.rules if r.direction == "Outbound"], inbound=False)
        body += [f"-A {n.nsgi} -d {sb.ip}/32 -j {ci}", f"-A {n.nsgo} -s {sb.ip}/32 -j {co}"]
    body += _level(n.nsgi, [r for r in vnet_rules if r.direction == "Inbound"], inbound=True)
    body += _level(n.nsgo, [r for r in vnet_rules if r.direction == "Outbound"], inbound=False)
    # Chains of sandboxes that lost their rules, once nothing jumps to them any more.
    stale = sorted(c for c in (old & referenced_before) - keep)
    out += body + [f"-F {c}" for c in stale] + [f"-X {c}" for c in stale] + ["COMMIT"]
    restore("\n".join(out) + "\n")


def _level(chain: str, rules: list[SecurityRule], *, inbound: bool) -> list[str]:
    """One level of rules: Deny drops; Allow stops this level (inbound: and marks the packet)."""
    out: list[str] = []
    for line in rule_lines(chain, rules):
        if line.endswith("-j ACCEPT"):
            match = line[: -len("-j ACCEPT")]
            if inbound:
                out.append(f"{match}-j MARK --set-xmark {ALLOW_MARK}")
            out.append(f"{match}-j RETURN")
        else:
            out.append(line)
    return out


def apply_host_ports(n: Names, bridge_subnet: str, ports: list[HostPort]) -> None:
    """Rebuild the in-process host-port DNAT chains from every sandbox's mappings."""
    out = ["*nat", f":{n.hp} - [0:0]", f":{n.hpm} - [0:0]"]
    for p in sorted(ports, key=lambda p: (p.host_port, p.protocol)):
        c = f'-m comment --comment "cvs {p.owner}"'
        out.append(f"-A {n.hp} -p {p.protocol} -m {p.protocol} --dport {p.host_port} {c} "
                   f"-j DNAT --to-destination {p.ip}:{p.container_port}")
        # Loopback-sourced and hairpin connections need a source the sandbox can answer.
        for src in ("127.0.0.0/8", bridge_subnet):
            out.append(f"-A {n.hpm} -s {src} -d {p.ip}/32 -p {p.protocol} -m {p.protocol} "
                       f"--dport {p.container_port} {c} -j MASQUERADE")
    out.append("COMMIT")
    restore("\n".join(out) + "\n")


def teardown_node(n: Names, block: str) -> None:
    """Remove the vnet's chains and jumps; the shared CORRAL-VNET chains go when empty."""
    cur = save()
    filt, nat = cur.get("filter", []), cur.get("nat", [])
    f_out = ["*filter"]
    for rule in (f"-A CORRAL-VNET-OUT -i {n.bridge} -j {n.vout}", f"-A CORRAL-VNET-IN -o {n.bridge} -j {n.vin}",
                 f"-A CORRAL-VNET-EGRESS -i {n.bridge} -j ACCEPT"):
        if _has_rule(filt, rule):
            f_out.append(rule.replace("-A ", "-D ", 1))
    mine = [line.split(" ", 1)[0][1:] for line in filt if line.startswith(":CVS-")]
    own_sbx = {line.rsplit(" ", 1)[-1] for line in filt if line.startswith((f"-A {n.nsgi} ", f"-A {n.nsgo} "))}
    for chain in (n.vin, n.vout, n.fwd, n.nsgi, n.nsgo, *[c for c in mine if c in own_sbx]):
        if _has_chain(filt, chain):
            f_out.append(f"-F {chain}")
    for chain in (n.vin, n.vout, n.fwd, n.nsgi, n.nsgo, *[c for c in mine if c in own_sbx]):
        if _has_chain(filt, chain):
            f_out.append(f"-X {chain}")
    f_out.append("COMMIT")
    n_out = ["*nat"]
    for rule in (f"-A PREROUTING -m addrtype --dst-type LOCAL -j {n.hp}",
                 f"-A OUTPUT -m addrtype --dst-type LOCAL -j {n.hp}",
                 f"-A POSTROUTING -j {n.hpm}", f"-A POSTROUTING -s {block} -j {n.snat}"):
        if _has_rule(nat, rule):
            n_out.append(rule.replace("-A ", "-D ", 1))
    for chain in (n.hp, n.hpm, n.snat):
        if _has_chain(nat, chain):
            n_out += [f"-F {chain}", f"-X {chain}"]
    n_out.append("COMMIT")
    restore("\n".join(f_out + n_out) + "\n")
    # Shared chains: removed when no vnet jumps from them any more.
    filt = save().get("filter", [])
    if not any(line.startswith(tuple(f"-A {g} " for g in _GLOBAL)) for line in filt) and _has_chain(filt, _TOP):
        out = ["*filter"]
        if _has_rule(filt, f"-A FORWARD -j {_TOP}"):
            out.append(f"-D FORWARD -j {_TOP}")
        out += [f"-F {_TOP}", *[f"-X {g}" for g in _GLOBAL if _has_chain(filt, g)], f"-X {_TOP}", "COMMIT"]
        restore("\n".join(out) + "\n")
