"""Placement checks of a container group before it is written: what no node could ever satisfy is a 400.

``GroupService`` calls ``check`` on create, update and tag changes. Zones are
checked against the zones of the registered nodes (read at most every few
seconds, and again before refusing); GPU requests and node selectors are not:
a node that has them may join later, and until then the group is Pending with
the reason.
"""

from __future__ import annotations

import time

from corral.errors import InvalidRequest
from corral.model.group import ContainerGroup
from corral.model.records import NODES
from corral.store.base import Store

ZONES_TTL = 5.0


class GroupPlacementCheck:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._zones: set[str] = set()
        self._read_at = -ZONES_TTL

    def check(self, body: ContainerGroup) -> None:
        placement = body.properties.placement
        tags = body.tags or {}
        for i, s in enumerate((placement.spread if placement else None) or []):
            if s.tag not in tags:
                raise InvalidRequest(
                    f"properties.placement.spread[{i}].tag: the group has no tag '{s.tag}'; a spread constraint "
                    "spreads the groups sharing the value of one of the group's own tags (add it to tags)",
                    target=f"properties.placement.spread[{i}].tag")
        if body.zones:
            unknown = [z for z in body.zones if z not in self._known_zones()]
            if unknown:
                unknown = [z for z in unknown if z not in self._known_zones(fresh=True)]
            if unknown:
                known = ", ".join(sorted(self._zones)) or "none: no registered node has a zone"
                raise InvalidRequest(
                    f"zones: no node is in zone {', '.join(repr(z) for z in unknown)}, so the group could never be "
                    f"placed (zones of the nodes: {known})", target="zones")

    def _known_zones(self, fresh: bool = False) -> set[str]:
        if fresh or time.monotonic() - self._read_at > ZONES_TTL:
            self._zones = {z for rec in self.store.list(NODES) if (z := rec.value.get("zone"))}
            self._read_at = time.monotonic()
        return self._zones
