"""Load balancers on desired state, and the rules each node's agent applies.

A load balancer lives at ``/loadbalancers/<sub>/<rg>/<name>`` as one record (its
frontends, pools, rules and probes). Writes are compare-and-swap; a client may
pass the etag it read (``If-Match``) so two writers of one pool cannot lose each
other's addresses. ``node_rules`` flattens every load balancer into the DNAT
rules an agent applies (``corral.node.loadbalancer``); agents report the store
revision they applied (``/lbsync/<node>``), which the API shows as
``properties.pendingNodes`` so a client can wait until a change is in force.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import UTC, datetime
from typing import Any

from corral.control import netkeys as K
from corral.control.netplane import NetworkControl
from corral.errors import Conflict, InvalidRequest, NotFound, PreconditionFailed, VersionConflict
from corral.model.armids import (
    LB_SYNC,
    LB_TYPE,
    LOAD_BALANCERS,
    NGROUPS,
    parse_child_id,
    resource_id,
    resource_key,
    same_id,
)
from corral.model.lb import (
    BackendPool,
    LbMeta,
    LbRecord,
    LoadBalancer,
    NodeLbBackend,
    NodeLbProbe,
    NodeLbRule,
    NodeLbRules,
)
from corral.model.network import NodeBlocks
from corral.model.records import NODE_BLOCKS, NODES
from corral.store.base import ABSENT, Store

PROBE_INTERVAL = 5.0  # seconds between probes of a backend without intervalInSeconds (Azure's minimum)
PROBE_TIMEOUT = 30.0  # a probe fails without an answer within its interval, at most this long (as Azure's)
CHILDREN = ("frontendIPConfigurations", "backendAddressPools", "loadBalancingRules", "probes")


def etag(uid: str, version: int) -> str:
    return f'W/"{uid}-{version}"'


def _not_found(rg: str, name: str) -> NotFound:
    return NotFound(f"The Resource '{LB_TYPE}/{name}' under resource group '{rg}' was not found.")


def lb_id(sub: str, rg: str, name: str) -> str:
    return resource_id(sub, rg, LB_TYPE, name)


class LoadBalancerService:
    def __init__(self, store: Store, network: NetworkControl, default_location: str = "local") -> None:
        self.store = store
        self.network = network
        self.default_location = default_location

    # reads -----------------------------------------------------------------
    def get(self, sub: str, rg: str, name: str) -> tuple[LbRecord, int]:
        rec = self.store.get(resource_key(LOAD_BALANCERS, sub, rg, name))
        if rec is None:
            raise _not_found(rg, name)
        return LbRecord.model_validate(rec.value), rec.version

    def list(self, sub: str, rg: str | None = None) -> list[tuple[LbRecord, int]]:
        prefix = f"{LOAD_BALANCERS}{sub.lower()}/" + (f"{rg.lower()}/" if rg else "")
        return [(LbRecord.model_validate(r.value), r.version) for r in self.store.list(prefix)]

    def pending_nodes(self, version: int) -> list[str]:
        """Ready nodes whose agent has not yet applied the rules of store revision ``version``."""
        applied = {r.key[len(LB_SYNC):]: int(r.value.get("revision", 0)) for r in self.store.list(LB_SYNC)}
        out = []
        for rec in self.store.list(NODES):
            if rec.value.get("ready", True) is False:
                continue
            name = rec.key[len(NODES):]
            if applied.get(name, 0) < version:
                out.append(name)
        return sorted(out)

    # writes ----------------------------------------------------------------
    def put(self, sub: str, rg: str, name: str, spec: LoadBalancer, if_match: str | None = None,
            ) -> tuple[LbRecord, int, bool]:
        spec.location = spec.location or self.default_location
        key = resource_key(LOAD_BALANCERS, sub, rg, name)
        for _ in range(10):
            rec = self.store.get(key)
            old = LbRecord.model_validate(rec.value) if rec else None
            if if_match and if_match != "*":
                if old is None or rec is None or if_match != etag(old.meta.uid, rec.version):
                    raise PreconditionFailed(f"load balancer '{name}' changed since it was read (etag mismatch); "
                                             "read it again and retry")
            meta = old.meta.model_copy(deep=True) if old else LbMeta(
                uid=uuid.uuid4().hex[:16], subscription=sub, resourceGroup=rg, name=name, createdAt=datetime.now(UTC))
            self._validate(sub, rg, name, spec, meta)
            record = LbRecord(spec=spec, meta=meta)
            try:
                new = self.store.put(key, record.dump(), expect_version=rec.version if rec else ABSENT)
            except VersionConflict:
                if if_match:
                    raise PreconditionFailed(f"load balancer '{name}' changed since it was read; retry") from None
                continue
            return record, new.version, rec is None
        raise Conflict(f"load balancer '{name}' is changing too often to update; retry")

    def put_pool(self, sub: str, rg: str, name: str, pool: BackendPool, if_match: str | None = None,
                 ) -> tuple[LbRecord, int, bool]:
        """Create or replace one backend pool (its addresses), leaving the rest of the load balancer alone."""
        for _ in range(10):
            record, version = self.get(sub, rg, name)
            spec = record.spec.model_copy(deep=True)
            pools = spec.properties.backendAddressPools
            idx = next((i for i, p in enumerate(pools) if p.name.lower() == pool.name.lower()), None)
            if if_match and if_match != "*" and if_match != etag(record.meta.uid, version):
                raise PreconditionFailed(f"backend pool '{pool.name}' changed since it was read (etag mismatch); "
                                         "read it again and retry")
            if idx is None:
                pools.append(pool)
            else:
                pools[idx] = pool
            try:
                new, new_version, _ = self.put(sub, rg, name, spec, if_match=etag(record.meta.uid, version))
            except PreconditionFailed:
                if if_match:
                    raise
                continue
            return new, new_version, idx is None
        raise Conflict(f"load balancer '{name}' is changing too often to update; retry")

    def delete_child(self, sub: str, rg: str, name: str, kind: str, child: str) -> bool:
        for _ in range(10):
            record, version = self.get(sub, rg, name)
            spec = record.spec.model_copy(deep=True)
            items = getattr(spec.properties, kind)
            kept = [c for c in items if c.name.lower() != child.lower()]
            if len(kept) == len(items):
                return False
            setattr(spec.properties, kind, kept)
            try:
                self.put(sub, rg, name, spec, if_match=etag(record.meta.uid, version))
            except PreconditionFailed:
                continue
            return True
        raise Conflict(f"load balancer '{name}' is changing too often to update; retry")

    def update_tags(self, sub: str, rg: str, name: str, tags: dict[str, str] | None) -> tuple[LbRecord, int]:
        for _ in range(10):
            record, version = self.get(sub, rg, name)
            spec = record.spec.model_copy(deep=True)
            spec.tags = tags
            try:
                new, new_version, _ = self.put(sub, rg, name, spec, if_match=etag(record.meta.uid, version))
            except PreconditionFailed:
                continue
            return new, new_version
        raise Conflict(f"load balancer '{name}' is changing too often to update; retry")

    def delete(self, sub: str, rg: str, name: str) -> bool:
        key = resource_key(LOAD_BALANCERS, sub, rg, name)
        if self.store.get(key) is None:
            return False
        users = self._users(lb_id(sub, rg, name))
        if users:
            raise Conflict(f"load balancer '{name}' is used by {', '.join(users)}; delete or change them first")
        return self.store.delete(key)

    def _users(self, lb: str) -> list[str]:
        out = []
        for rec in self.store.list(NGROUPS):
            if rec.value["meta"].get("deleting"):
                continue
            for stub in rec.value.get("spec", {}).get("properties", {}).get("containerGroupProfiles", []):
                pools = ((stub.get("networkProfile") or {}).get("loadBalancer") or {}).get("backendAddressPools") or []
                for p in pools:
                    pid = str((p.get("resource") or {}).get("id", ""))
                    if pid.lower().startswith(lb.lower() + "/"):
                        out.append(f"NGroup '{rec.value['meta']['name']}'")
        return sorted(set(out))

    # validation --------------------------------------------------------------
    def _validate(self, sub: str, rg: str, name: str, spec: LoadBalancer, meta: LbMeta) -> None:
        props = spec.properties
        for kind in CHILDREN:
            names = [c.name.lower() for c in getattr(props, kind)]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise InvalidRequest(f"{kind} names must be unique in a load balancer: {', '.join(dup)} repeated",
                                     target=f"properties.{kind}")
        fes = {f.name.lower(): f for f in props.frontendIPConfigurations}
        addresses: dict[str, str] = {}
        for i, fe in enumerate(props.frontendIPConfigurations):
            target = f"properties.frontendIPConfigurations[{i}].properties"
            if fe.properties.subnet is None:
                if fe.properties.privateIPAddress:
                    raise InvalidRequest("privateIPAddress needs a subnet (a private frontend lives in a virtual "
                                         "network subnet)", target=f"{target}.privateIPAddress")
                continue
            addresses[fe.name.lower()] = self._frontend_address(
                sub, fe.properties.subnet.id, fe.properties.privateIPAddress,
                meta.frontendAddresses.get(fe.name.lower()), set(addresses.values()), target)
            fe.properties.privateIPAllocationMethod = fe.properties.privateIPAllocationMethod or (
                "Static" if fe.properties.privateIPAddress else "Dynamic")
        meta.frontendAddresses = addresses
        pools = {p.name.lower() for p in props.backendAddressPools}
        probes = {p.name.lower() for p in props.probes}
        me = lb_id(sub, rg, name)
        seen: set[tuple[str, str, int]] = set()
        for i, rule in enumerate(props.loadBalancingRules):
            target = f"properties.loadBalancingRules[{i}].properties"
            rp = rule.properties
            fe_name = self._child(me, rp.frontendIPConfiguration.id, "frontendIPConfigurations", fes, target)
            for ref in rp.pool_refs():
                self._child(me, ref, "backendAddressPools", pools, f"{target}.backendAddressPool")
            if not rp.pool_refs():
                raise InvalidRequest("a load-balancing rule needs a backendAddressPool",
                                     target=f"{target}.backendAddressPool")
            if rp.probe is not None:
                self._child(me, rp.probe.id, "probes", probes, f"{target}.probe")
            if rp.frontendPort == 0 or (rp.backendPort or rp.frontendPort) == 0:
                raise InvalidRequest("frontendPort 0 (HA ports) is not supported: name the port",
                                     target=f"{target}.frontendPort")
            for proto in (("tcp", "udp") if rp.protocol == "All" else (rp.protocol.lower(),)):
                k = (fe_name, proto, rp.frontendPort)
                if k in seen:
                    raise InvalidRequest(f"two rules use frontend '{fe_name}' port {rp.frontendPort}/{proto}",
                                         target=f"{target}.frontendPort")
                seen.add(k)

    @staticmethod
    def _child(lb: str, ref: str, kind: str, names: Any, target: str) -> str:
        try:
            parent, child = parse_child_id(ref, LB_TYPE, kind)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=target) from None
        if not same_id(resource_id(*parent[:2], LB_TYPE, parent.name), lb):
            raise InvalidRequest(f"{ref} belongs to another load balancer", target=target)
        if child.lower() not in names:
            raise InvalidRequest(f"the load balancer has no {kind[:-1]} '{child}'", target=target)
        return child.lower()

    def _frontend_address(self, sub: str, subnet_id: str, static: str | None, picked: str | None,
                          taken: set[str], target: str) -> str:
        try:
            ref = K.parse_subnet_id(subnet_id)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=f"{target}.subnet.id") from None
        try:
            record, sn, _ = self.network.vnets.get_subnet(*ref)
        except NotFound:
            raise InvalidRequest(f"subnet '{ref.subnet}' of virtual network '{ref.vnet}' does not exist",
                                 target=f"{target}.subnet.id") from None
        net = sn.properties.prefix
        blocks = [ipaddress.IPv4Network(b) for b in self._blocks(record.meta.uid).get(sn.name.lower(), {}).values()]
        if static:
            ip = ipaddress.IPv4Address(static)
            if ip not in net or ip in (net.network_address, net.broadcast_address):
                raise InvalidRequest(f"privateIPAddress {static} is not a host address of subnet {net}",
                                     target=f"{target}.privateIPAddress")
            if any(ip in b for b in blocks):
                raise InvalidRequest(f"privateIPAddress {static} is inside a node's address block of subnet {net}; "
                                     "pick one from the top of the subnet", target=f"{target}.privateIPAddress")
            return static
        if picked and ipaddress.IPv4Address(picked) in net and picked not in taken:
            return picked
        # Dynamic frontends take addresses from the top of the subnet; node blocks are granted from the bottom.
        used = taken | self._frontends_in_use()
        candidate = int(net.broadcast_address) - 1
        while candidate > int(net.network_address) + 1:
            ip = ipaddress.IPv4Address(candidate)
            if str(ip) not in used and not any(ip in b for b in blocks):
                return str(ip)
            candidate -= 1
        raise InvalidRequest(f"subnet {net} has no free address for a frontend", target=f"{target}.subnet.id")

    def _blocks(self, vnet_uid: str) -> dict[str, dict[str, str]]:
        rec = self.store.get(K.blocks_key(vnet_uid))
        return NodeBlocks.model_validate(rec.value).blocks if rec else {}

    def _frontends_in_use(self) -> set[str]:
        return {ip for r in self.store.list(LOAD_BALANCERS)
                for ip in r.value["meta"].get("frontendAddresses", {}).values()}

    # what agents apply -------------------------------------------------------
    def node_rules(self, node: str) -> NodeLbRules:
        rev = self.store.revision()
        gateways = self._gateways(node)
        out: list[NodeLbRule] = []
        for rec in self.store.list(LOAD_BALANCERS):
            lb = LbRecord.model_validate(rec.value)
            props = lb.spec.properties
            fes = {f.name.lower(): f for f in props.frontendIPConfigurations}
            pools = {p.name.lower(): p for p in props.backendAddressPools}
            probes = {p.name.lower(): p for p in props.probes}
            me = lb_id(lb.meta.subscription, lb.meta.resourceGroup, lb.meta.name)
            for rule in props.loadBalancingRules:
                rp = rule.properties
                fe = parse_child_id(rp.frontendIPConfiguration.id, LB_TYPE, "frontendIPConfigurations")[1].lower()
                if fe not in fes:
                    continue
                backends: dict[str, NodeLbBackend] = {}
                for ref in rp.pool_refs():
                    pool = pools.get(parse_child_id(ref, LB_TYPE, "backendAddressPools")[1].lower())
                    for addr in (pool.properties.loadBalancerBackendAddresses or []) if pool else []:
                        ip = addr.properties.ipAddress
                        if not ip or addr.properties.adminState in ("Down", "Drain"):
                            continue
                        port = rp.backendPort or rp.frontendPort
                        backends[f"{ip}:{port}"] = NodeLbBackend(ip=ip, port=port, snat=_gateway_for(ip, gateways))
                probe = probes.get(parse_child_id(rp.probe.id, LB_TYPE, "probes")[1].lower()) if rp.probe else None
                interval = float(probe.properties.intervalInSeconds or PROBE_INTERVAL) if probe else PROBE_INTERVAL
                check = None if probe is None else NodeLbProbe(
                    protocol=probe.properties.protocol, port=probe.properties.port,
                    path=probe.properties.requestPath or "/", interval=interval, timeout=min(interval, PROBE_TIMEOUT),
                    threshold=probe.properties.probeThreshold or probe.properties.numberOfProbes or 1,
                    allProbedUp=probe.properties.noHealthyBackendsBehavior == "AllProbedUp")
                protocols = ("tcp", "udp") if rp.protocol == "All" else (rp.protocol.lower(),)
                for proto in protocols:
                    out.append(NodeLbRule(
                        id=f"{me}/loadBalancingRules/{rule.name}/{proto}".lower(), protocol=proto,  # type: ignore[arg-type]
                        frontendIp=lb.meta.frontendAddresses.get(fe), frontendPort=rp.frontendPort,
                        backends=sorted(backends.values(), key=lambda b: (b.ip, b.port)), probe=check))
        return NodeLbRules(revision=rev, rules=out)

    def _gateways(self, node: str) -> list[tuple[ipaddress.IPv4Network, str]]:
        """(subnet prefix, this node's gateway in it) for every subnet where the node has a block."""
        out = []
        for rec in self.store.list(NODE_BLOCKS):
            blocks = NodeBlocks.model_validate(rec.value)
            for subnet_blocks in blocks.blocks.values():
                mine = subnet_blocks.get(node)
                if mine is None:
                    continue
                gw = str(ipaddress.IPv4Network(mine).network_address + 1)
                for other in subnet_blocks.values():
                    out.append((ipaddress.IPv4Network(other), gw))
        return out

    def report_applied(self, node: str, revision: int) -> None:
        self.store.put(LB_SYNC + node, {"revision": revision, "at": datetime.now(UTC).isoformat()})


def _gateway_for(ip: str, gateways: list[tuple[ipaddress.IPv4Network, str]]) -> str | None:
    addr = ipaddress.IPv4Address(ip)
    for net, gw in gateways:
        if addr in net:
            return gw
    return None
