"""The node's share of the load balancers: DNAT from each frontend to its backends, balanced at random.

No IPVS (not in these kernels): iptables (the nft flavour, like the rest of the
node) in the nat table, rebuilt whole with one ``iptables-restore --noflush`` per
change, so a change is atomic and live. Only a connection's first packet meets
these rules; conntrack keeps every established connection on the backend it got,
so a backend that leaves the pool drains instead of being cut off.

nat table (``<t>`` is this node's tag, from its data directory: several nodes may share a host)
  PREROUTING, OUTPUT (first) -> CORLB-<t>: per rule, frontend match -> CORLB-<t>-<rule>
      public frontend:  ``-m addrtype --dst-type LOCAL --dport P`` (every address of the node)
      private frontend: ``-d <frontend ip> --dport P``
  CORLB-<t>-<rule>: MARK, then backend i of n with probability 1/(n-i) (the last always): DNAT
  POSTROUTING (first) -> CORLB-<t>-P: marked connections get a source the backend answers: this
      node's gateway in the backend's network (routable from every node of it), else MASQUERADE.
A backend failing its rule's probe is left out until it passes again (all failing: none is left, unless the
probe's noHealthyBackendsBehavior is AllProbedUp, which then sends to all).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from corral.model.lb import NodeLbBackend, NodeLbRule, NodeLbRules
from corral.net.vnet import firewall, netops
from corral.node.lbprobe import BackendHealth

log = logging.getLogger(__name__)
T = TypeVar("T")
MARK = "0x200000/0x200000"
HOOKS = ("PREROUTING", "OUTPUT")


def node_tag(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:6]


def _rule_chain(tag: str, rule_id: str) -> str:
    return f"CORLB-{tag}-{hashlib.sha256(rule_id.encode()).hexdigest()[:8]}"


def render(tag: str, rules: list[NodeLbRule], existing: list[str]) -> str:
    """The iptables-restore input that makes the nat table hold exactly ``rules`` (``existing``: its lines now)."""
    top, post = f"CORLB-{tag}", f"CORLB-{tag}-P"
    out = ["*nat", f":{top} - [0:0]", f":{post} - [0:0]"]
    body: list[str] = []
    keep: set[str] = set()
    for r in sorted(rules, key=lambda r: r.id):
        if not r.backends:
            continue  # nothing to send to: the port stays closed (a local client gets a reset)
        chain = _rule_chain(tag, r.id)
        keep.add(chain)
        out.append(f":{chain} - [0:0]")
        proto = f"-p {r.protocol} -m {r.protocol} --dport {r.frontendPort}"
        match = f"-m addrtype --dst-type LOCAL {proto}" if r.frontendIp is None else f"-d {r.frontendIp}/32 {proto}"
        body.append(f"-A {top} {match} -j {chain}")
        body.append(f"-A {chain} -j MARK --set-xmark {MARK}")
        n = len(r.backends)
        for i, b in enumerate(r.backends):
            stat = f"-m statistic --mode random --probability {1 / (n - i):.8f} " if i < n - 1 else ""
            body.append(f"-A {chain} -p {r.protocol} {stat}-j DNAT --to-destination {b.ip}:{b.port}")
            target = f"SNAT --to-source {b.snat}" if b.snat else "MASQUERADE"
            body.append(f"-A {post} -m mark --mark {MARK} -d {b.ip}/32 -p {r.protocol} -m {r.protocol} "
                        f"--dport {b.port} -j {target}")
    body.append(f"-A {post} -m mark --mark {MARK} -j MASQUERADE")
    stale = sorted({line.split(" ", 1)[0][1:] for line in existing if line.startswith(f":CORLB-{tag}-")}
                   - keep - {post})
    out += body + [f"-F {c}" for c in stale] + [f"-X {c}" for c in stale]
    for hook in HOOKS:
        if f"-A {hook} -j {top}" not in existing:
            out.append(f"-I {hook} 1 -j {top}")
    if f"-A POSTROUTING -j {post}" not in existing:
        out.append(f"-I POSTROUTING 1 -j {post}")
    out.append("COMMIT")
    return "\n".join(out) + "\n"


class LoadBalancerRules:
    """Applies what ``ControlPlaneLink.load_balancer_rules`` says, in the node's (maybe simulated) host netns,
    leaving out the backends that fail their rule's health probe (``corral.node.lbprobe``)."""

    def __init__(self, data_dir: Path, host_netns: str | None = None) -> None:
        self.tag = node_tag(data_dir)
        self.host_netns = host_netns
        self.applied: str | None = None  # the last rules in force (JSON), to skip no-op rebuilds
        self._rules: list[NodeLbRule] = []
        self._lock = threading.Lock()
        self.health = BackendHealth(self._reapply, self._host)

    def _host(self, fn: Callable[[], T]) -> T:
        return netops.in_netns(self.host_netns, fn) if self.host_netns else fn()

    def apply(self, rules: NodeLbRules) -> bool:
        """Make the node's rules ``rules.rules``; False when they were already in force."""
        with self._lock:
            self._rules = rules.rules
            self.health.watch(rules.rules)
            return self._write()

    def _reapply(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> bool:
        rules = [r.model_copy(update={"backends": self._healthy(r)}) for r in self._rules]
        text = NodeLbRules(revision=0, rules=rules).model_dump_json()
        if text == self.applied:
            return False

        def work() -> None:
            existing = firewall.save().get("nat", [])
            firewall.restore(render(self.tag, rules, existing))
        self._host(work)
        self.applied = text
        return True

    def _healthy(self, rule: NodeLbRule) -> list[NodeLbBackend]:
        healthy = [b for b in rule.backends if self.health.healthy(b.ip, rule.probe)]
        if not healthy and rule.probe is not None and rule.probe.allProbedUp:
            return list(rule.backends)  # AllProbedUp: every backend failing is taken as none failing
        return healthy

    def stop(self) -> None:
        self.health.stop()

    def teardown(self) -> None:
        """Remove every chain and jump of this node (node reset); fine if there are none."""
        top, post = f"CORLB-{self.tag}", f"CORLB-{self.tag}-P"

        def work() -> None:
            existing = firewall.save().get("nat", [])
            chains = sorted({line.split(" ", 1)[0][1:] for line in existing if line.startswith(f":CORLB-{self.tag}")})
            if not chains:
                return
            out = ["*nat"]
            out += [f"-D {h} -j {top}" for h in HOOKS if f"-A {h} -j {top}" in existing]
            if f"-A POSTROUTING -j {post}" in existing:
                out.append(f"-D POSTROUTING -j {post}")
            out += [f"-F {c}" for c in chains] + [f"-X {c}" for c in chains] + ["COMMIT"]
            firewall.restore("\n".join(out) + "\n")
        self._host(work)
        self.applied = None
