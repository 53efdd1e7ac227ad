"""What a group asks of the scheduler, read once from its stored record.

The binder reads every group it ever places, so this works on the stored dict
directly rather than through the pydantic models: the record was validated by
the API when it was written, and a model round trip per group costs more than
the placement itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.control.netkeys import parse_subnet_id

NODE = "node"
ZONE = "zone"

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Selector:
    """The groups of one resource group (``scope``) carrying all of ``tags``."""

    scope: str
    tags: Pairs  # sorted

    def matches(self, scope: str, tags: dict[str, str]) -> bool:
        if scope != self.scope:
            return False
        for k, v in self.tags:
            if tags.get(k) != v:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Term:
    """Groups matching ``selector`` within one domain of ``key`` (a node or a zone)."""

    selector: Selector
    key: str


@dataclass(frozen=True, slots=True)
class Preference:
    term: Term
    weight: int  # > 0: near those groups (affinity); < 0: away from them (anti-affinity)


@dataclass(frozen=True, slots=True)
class Spread:
    family: Selector
    key: str
    max_skew: int
    hard: bool  # DoNotSchedule; else ScheduleAnyway (a score)


@dataclass(slots=True)
class Demand:
    key: str
    uid: str
    scope: str  # "<subscription>/<resource group>", lower case
    tags: dict[str, str]
    cpu: float
    mem: float
    gpus: tuple[tuple[str, int], ...]  # (SKU upper case, count)
    os: str
    ports: tuple[tuple[int, str], ...]  # host ports of a Public group: (port, protocol)
    subnet: str  # canonical subnet key (see ``subnet_key``)
    zones: frozenset[str] | None
    node_selector: Pairs
    affinity: tuple[Term, ...]  # required
    anti_affinity: tuple[Term, ...]  # required
    preferences: tuple[Preference, ...]
    spread: tuple[Spread, ...]
    running: bool  # desired Running: holds its resources (a stopped group holds none)
    node: str | None
    deleting: bool
    refit: bool  # bound, and asks its node for more than it held: the scheduler checks it still fits there
    selectors: frozenset[Selector] = frozenset()  # every selector its placement reads counts of

    @property
    def static_key(self) -> tuple[object, ...]:
        """What the node-attribute filters depend on: groups alike share their cached masks."""
        return (self.os, self.zones, self.node_selector)

    def same_footprint(self, other: Demand) -> bool:
        """Whether a bound group's change leaves what it holds on its node as it was."""
        return (self.running, self.cpu, self.mem, self.gpus, self.ports, self.subnet, self.tags, self.anti_affinity,
                self.scope) == (other.running, other.cpu, other.mem, other.gpus, other.ports, other.subnet,
                                other.tags, other.anti_affinity, other.scope)


def subnet_key(subnet_id: str) -> str:
    """``sub/rg/vnet/subnet`` in lower case: how the scheduler names a subnet (ARM names ignore case)."""
    ref = parse_subnet_id(subnet_id)
    return "/".join(ref).lower()


def _pairs(d: dict[str, str] | None) -> Pairs:
    return tuple(sorted((d or {}).items()))


def _terms(raw: list[dict[str, Any]] | None, scope: str, sign: int,
           required: list[Term], preferred: list[Preference]) -> None:
    for t in raw or []:
        term = Term(Selector(scope, _pairs(t["tags"])), t.get("topologyKey", NODE))
        if t.get("required", True):
            required.append(term)
        else:
            preferred.append(Preference(term, sign * int(t.get("weight") or 1)))


def demand_of(key: str, value: dict[str, Any], default_subnet: str) -> Demand:
    """The demand of a stored group record (``GroupRecord.dump()`` shape); ``default_subnet`` is the
    canonical key of the subnet groups that name none join."""
    spec, meta = value["spec"], value["meta"]
    props = spec["properties"]
    cpu = mem = 0.0
    gpus: dict[str, int] = {}
    for c in props["containers"]:
        req = c["properties"].get("resources", {}).get("requests", {})
        cpu += req.get("cpu", 1.0)
        mem += req.get("memoryInGB", 1.5)
        gpu = req.get("gpu")
        if gpu:
            sku = gpu["sku"].upper()
            gpus[sku] = gpus.get(sku, 0) + int(gpu["count"])
    ip = props.get("ipAddress")
    ports: tuple[tuple[int, str], ...] = ()
    if ip and ip.get("type", "Public") == "Public":
        ports = tuple(sorted({(int(p.get("publicPort") or p["port"]), p.get("protocol", "TCP").upper())
                              for p in ip.get("ports") or []}))
    subnets = props.get("subnetIds") or []
    subnet = subnet_key(subnets[0]["id"]) if subnets else default_subnet
    scope = f"{meta['subscription']}/{meta['resourceGroup']}".lower()
    tags = dict(spec.get("tags") or {})
    placement = props.get("placement") or {}
    required: list[Term] = []
    anti: list[Term] = []
    preferred: list[Preference] = []
    _terms(placement.get("affinity"), scope, 1, required, preferred)
    _terms(placement.get("antiAffinity"), scope, -1, anti, preferred)
    spread = []
    for s in placement.get("spread") or []:
        value_of = tags.get(s["tag"])
        if value_of is None:
            continue  # the family tag was removed since: a family of one spreads trivially
        spread.append(Spread(Selector(scope, ((s["tag"], value_of),)), s.get("topologyKey", ZONE),
                             int(s.get("maxSkew", 1)), s.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"))
    zones = spec.get("zones")
    selectors = frozenset([*(t.selector for t in (*required, *anti)), *(p.term.selector for p in preferred),
                           *(s.family for s in spread)])
    return Demand(
        key=key, uid=meta["uid"], scope=scope, tags=tags, cpu=cpu, mem=mem, gpus=tuple(sorted(gpus.items())),
        os=props.get("osType", "Linux"), ports=ports, subnet=subnet,
        zones=frozenset(zones) if zones else None, node_selector=_pairs(placement.get("nodeSelector")),
        affinity=tuple(required), anti_affinity=tuple(anti), preferences=tuple(preferred), spread=tuple(spread),
        running=meta.get("desiredState", "Running") == "Running", node=meta.get("node"),
        deleting=bool(meta.get("deleting")), refit=bool(meta.get("refit")) and not meta.get("deleting"),
        selectors=selectors,
    )
