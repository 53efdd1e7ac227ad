"""Rendered container groups, kept by the store versions they were rendered from.

A GET of a group reads its record and its status record (two point reads);
validating them into models, rendering the ARM body and encoding it as JSON
cost several times more, and are the same for every read until either record
changes. Each write gets a new version (the store's revision), so a body
cached under (group version, status version, DNS zone) is exactly what a fresh
render would give: there is nothing to invalidate and no read can be stale.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

from corral.api.render import render_group
from corral.control.groups import GroupService
from corral.store.base import Record

CAPACITY = 4096  # groups; a rendered group is ~2 kB


def encode(doc: object) -> bytes:
    """JSON as Starlette's JSONResponse writes it (compact, UTF-8)."""
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class RenderedGroups:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._bodies: OrderedDict[str, tuple[tuple[int, int, str | None], bytes]] = OrderedDict()
        self.hits = 0  # bodies served from the cache (tests read it)

    def body(self, svc: GroupService, rec: Record, zone: str | None) -> bytes:
        """The group's ARM body as JSON bytes."""
        st = svc.status_record(rec)
        stamp = (rec.version, st.version if st is not None else 0, zone)
        with self._lock:
            got = self._bodies.get(rec.key)
            if got is not None and got[0] == stamp:
                self._bodies.move_to_end(rec.key)
                self.hits += 1
                return got[1]
        data = encode(render_group(svc.view_of(rec, st), zone))
        with self._lock:
            self._bodies[rec.key] = (stamp, data)
            self._bodies.move_to_end(rec.key)
            while len(self._bodies) > self.capacity:
                self._bodies.popitem(last=False)
        return data

    def listing(self, svc: GroupService, records: list[Record], zone: str | None) -> bytes:
        """``{"value": [...]}`` of the groups, as JSON bytes."""
        return b'{"value":[' + b",".join(self.body(svc, r, zone) for r in records) + b"]}"
