"""Route tables and their routes on desired state, and what the nodes make of them.

A route table applies to the subnets whose ``routeTable.id`` names it. Nodes get a subnet's routes
in its plugin configuration (``routes``), and the node holding a VirtualAppliance next hop gets the
routes that send traffic to it (``applianceRoutes``) so it can hand that traffic to the appliance.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from corral.control import netkeys as K
from corral.control.vnets import VnetService
from corral.errors import Conflict, InUseRouteTableCannotBeDeleted, InvalidRequest, NotFound
from corral.model.network import (
    NetMeta,
    Ref,
    Route,
    RouteRecord,
    RouteTable,
    RouteTableRecord,
    SubnetRecord,
    VnetRecord,
    check_net_name,
)
from corral.store.base import Store
from corral.store.update import update_record


def _routes(routes: list[Route] | None) -> dict[str, RouteRecord] | None:
    if routes is None:
        return None
    out: dict[str, RouteRecord] = {}
    for i, r in enumerate(routes):
        if not r.name:
            raise InvalidRequest("every route needs a name", target=f"properties.routes[{i}].name")
        try:
            check_net_name(r.name, "route")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=f"properties.routes[{i}].name") from None
        if r.name.lower() in out:
            raise InvalidRequest(f"two routes are named '{r.name}'", target=f"properties.routes[{i}].name")
        out[r.name.lower()] = RouteRecord(name=r.name, properties=r.properties)
    _check_prefixes(out)
    return out


def _check_prefixes(routes: dict[str, RouteRecord], target: str | None = None) -> None:
    """One route per prefix; the error names the route of the body (``target``: the one route PUT)."""
    seen: dict[str, str] = {}
    for i, r in enumerate(routes.values()):
        p = r.properties.addressPrefix
        if p in seen:
            raise InvalidRequest(f"routes '{seen[p]}' and '{r.name}' both have address prefix {p}: a route table "
                                 "holds one route per prefix",
                                 target=target or f"properties.routes[{i}].properties.addressPrefix")
        seen[p] = r.name


def _table_key(ref: Ref | None) -> str | None:
    """The store key of the route table a subnet's ``routeTable`` names (None: none, or not a route table id)."""
    if ref is None:
        return None
    try:
        return K.route_table_key(*K.parse_route_table_id(ref.id))
    except ValueError:
        return None


def load_table(store: Store, ref: Ref | None) -> RouteTableRecord | None:
    key = _table_key(ref)
    rec = store.get(key) if key else None
    return RouteTableRecord.model_validate(rec.value) if rec else None


def check_association(store: Store, sub: str, location: str, ref: Ref) -> None:
    """A subnet may name a route table of its own subscription and location that exists."""
    target = "properties.routeTable.id"
    try:
        r = K.parse_route_table_id(ref.id)
    except ValueError as exc:
        raise InvalidRequest(str(exc), target=target) from None
    if r.subscription.lower() != sub.lower():
        raise InvalidRequest("the route table must be in the subscription of the subnet", target=target)
    table = load_table(store, ref)
    if table is None:
        raise InvalidRequest(f"route table '{r.route_table}' in resource group '{r.resource_group}' does not exist; "
                             "create it first", target=target)
    if table.location.lower() != location.lower():
        raise InvalidRequest(f"route table '{r.route_table}' is in location '{table.location}', the virtual network "
                             f"in '{location}': they must be in the same location", target=target)


def subnet_routes(store: Store, sn: SubnetRecord) -> list[dict[str, str]]:
    """The subnet's routes in the plugin's form ([] without a route table)."""
    table = load_table(store, sn.properties.routeTable)
    if table is None:
        return []
    return [{"name": r.name, **r.properties.model_dump(include={"addressPrefix", "nextHopType", "nextHopIpAddress"},
                                                       exclude_none=True)}
            for r in sorted(table.routes.values(), key=lambda r: r.name.lower())]


def appliance_routes(store: Store, block: str) -> list[dict[str, str]]:
    """Routes of any route table whose VirtualAppliance next hop lies in ``block`` (a node's block), with
    the prefix of each subnet the table is associated with as the source."""
    net = ipaddress.IPv4Network(block)
    wanted: dict[str, list[RouteRecord]] = {}
    for rec in store.list(K.ROUTE_TABLES):
        table = RouteTableRecord.model_validate(rec.value)
        hops = [r for r in table.routes.values() if r.properties.nextHopType == "VirtualAppliance"
                and ipaddress.IPv4Address(r.properties.nextHopIpAddress) in net]
        if hops:
            m = table.meta
            wanted[K.route_table_key(m.subscription, m.resourceGroup, m.name)] = hops
    if not wanted:
        return []
    out: list[dict[str, str]] = []
    for rec in store.list(K.VNETS):
        for sn in VnetRecord.model_validate(rec.value).subnets.values():
            for r in wanted.get(_table_key(sn.properties.routeTable) or "", []):
                out.append({"sourceAddressPrefix": str(sn.properties.addressPrefix),
                            "addressPrefix": r.properties.addressPrefix,
                            "nextHopIpAddress": str(r.properties.nextHopIpAddress)})
    return sorted(out, key=lambda d: (d["sourceAddressPrefix"], d["addressPrefix"], d["nextHopIpAddress"]))


class RouteTableService:
    def __init__(self, store: Store, vnets: VnetService, default_location: str = "local") -> None:
        self.store = store
        self.vnets = vnets
        self.default_location = default_location

    def get(self, sub: str, rg: str, name: str) -> tuple[RouteTableRecord, int]:
        rec = self.store.get(K.route_table_key(sub, rg, name))
        if rec is None:
            raise NotFound(f"The Resource '{K.ROUTE_TABLE_TYPE}/{name}' under resource group '{rg}' was not found.")
        return RouteTableRecord.model_validate(rec.value), rec.version

    def list(self, sub: str, rg: str | None = None) -> list[tuple[RouteTableRecord, int]]:
        prefix = f"{K.ROUTE_TABLES}{sub.lower()}/" + (f"{rg.lower()}/" if rg else "")
        return [(RouteTableRecord.model_validate(r.value), r.version) for r in self.store.list(prefix)]

    def subnets_using(self, sub: str, rg: str, name: str) -> list[str]:
        want = K.route_table_key(sub, rg, name)
        out = []
        for rec in self.store.list(K.VNETS):
            v = VnetRecord.model_validate(rec.value)
            for sn in v.subnets.values():
                if _table_key(sn.properties.routeTable) == want:
                    out.append(K.subnet_id(v.meta.subscription, v.meta.resourceGroup, v.meta.name, sn.name))
        return out

    def put(self, sub: str, rg: str, name: str, body: RouteTable) -> tuple[RouteTableRecord, int, bool]:
        try:
            check_net_name(name, "route table")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        routes = _routes(body.properties.routes)

        def apply(old: RouteTableRecord | None) -> RouteTableRecord:
            bgp = bool(body.properties.disableBgpRoutePropagation)
            if old is None:
                meta = NetMeta(uid=uuid.uuid4().hex[:16], subscription=sub, resourceGroup=rg, name=name,
                               createdAt=datetime.now(UTC))
                return RouteTableRecord(meta=meta, location=body.location or self.default_location, tags=body.tags,
                                        disableBgpRoutePropagation=bgp, routes=routes or {})
            if body.location and body.location.lower() != old.location.lower():
                raise Conflict(f"location cannot change on an existing route table ({old.location} -> "
                               f"{body.location})")
            new = old.model_copy(deep=True)
            new.tags, new.disableBgpRoutePropagation = body.tags, bgp
            if routes is not None:  # absent routes keeps them (they have their own routes)
                new.routes = routes
            return new

        return self._cas(K.route_table_key(sub, rg, name), apply, create_ok=True, what=name)

    def delete(self, sub: str, rg: str, name: str) -> bool:
        key = K.route_table_key(sub, rg, name)
        if self.store.get(key) is None:
            return False
        users = self.subnets_using(sub, rg, name)
        if users:
            raise InUseRouteTableCannotBeDeleted(
                f"route table '{name}' is associated with subnet(s) {', '.join(users)}; dissociate it first")
        return self.store.delete(key)

    def put_route(self, sub: str, rg: str, table: str, name: str, body: Route) -> tuple[RouteTableRecord, int, bool]:
        try:
            check_net_name(name, "route")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        created = False

        def apply(old: RouteTableRecord | None) -> RouteTableRecord:
            nonlocal created
            assert old is not None
            new = old.model_copy(deep=True)
            prev = new.routes.get(name.lower())
            created = prev is None
            new.routes[name.lower()] = RouteRecord(name=prev.name if prev else name, properties=body.properties)
            _check_prefixes(new.routes, target="properties.addressPrefix")
            return new

        record, version, _ = self._cas(K.route_table_key(sub, rg, table), apply, create_ok=False, what=table)
        return record, version, created

    def delete_route(self, sub: str, rg: str, table: str, name: str) -> bool:
        existed = False

        def apply(old: RouteTableRecord | None) -> RouteTableRecord:
            nonlocal existed
            assert old is not None
            new = old.model_copy(deep=True)
            existed = new.routes.pop(name.lower(), None) is not None
            return new

        try:
            self._cas(K.route_table_key(sub, rg, table), apply, create_ok=False, what=table)
        except NotFound:
            return False
        return existed

    def _cas(self, key: str, apply: Callable[[RouteTableRecord | None], RouteTableRecord], create_ok: bool,
             what: str) -> tuple[RouteTableRecord, int, bool]:
        def missing() -> NotFound:
            rg = key.split("/")[3]
            return NotFound(f"The Resource '{K.ROUTE_TABLE_TYPE}/{what}' under resource group '{rg}' was not found.")

        return update_record(self.store, key, RouteTableRecord, apply, missing=None if create_ok else missing,
                             busy="the route table is changing too often; retry")
