"""Corral extension: state changes of container groups as server-sent events.

Driven by the store's watch on ``/groups/`` and ``/status/`` (one watch on
their common root), not by polling the API: each change of a group record or
of what its node reported is rendered as the API would show it, compared with
what this stream showed before, and only the differences are sent:

* ``group``: the group's ``instanceView.state`` or ``provisioningState`` changed;
* ``container``: a container's state, restart count, detail, exit code or readiness changed;
* ``event``: a new (or repeated) entry in an ``instanceView.events`` list;
* ``deleted``: the group is gone.

The first messages of a stream are a ``group`` and ``container`` snapshot of
what matches now; earlier ``instanceView`` events are not replayed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from corral.api.access import stream_threads
from corral.api.deps import api_version
from corral.api.render import render_group
from corral.control.groups import GroupView
from corral.model.records import GROUPS, STATUS, GroupRecord, status_key
from corral.model.status import GroupStatus
from corral.store.base import Compacted, Store

router = APIRouter(dependencies=[Depends(api_version)])

PROVIDER = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance"
WATCH_WAKE = 1.0  # seconds a watch blocks before the stream looks at its client again
KEEPALIVE = 15.0  # seconds of silence before a comment line keeps proxies and clients from timing out

Message = tuple[str, dict[str, Any]]


class GroupFilter:
    def __init__(self, sub: str, rg: str, name: str | None = None) -> None:
        self.sub, self.rg, self.name = sub.lower(), rg.lower(), name.lower() if name else None

    def matches(self, key: str) -> bool:
        parts = key[len(GROUPS):].split("/")
        if len(parts) != 3 or parts[0] != self.sub or parts[1] != self.rg:
            return False
        return self.name is None or parts[2] == self.name


def summarize(view: GroupView) -> dict[str, Any]:
    """What a watcher is told about: the rendered group reduced to its states and events."""
    g = render_group(view)
    props = g["properties"]
    containers: dict[str, dict[str, Any]] = {}
    events: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for e in props["instanceView"]["events"]:
        events[("", e["name"], e["message"], e["firstTimestamp"])] = e
    for kind, items in (("init", props.get("initContainers") or []), ("", props["containers"])):
        for c in items:
            iv = c["properties"]["instanceView"]
            cur = iv.get("currentState") or {}
            containers[c["name"]] = {
                "container": c["name"], "init": kind == "init", "state": cur.get("state"),
                "restartCount": iv.get("restartCount", 0), "detailStatus": cur.get("detailStatus", ""),
                "exitCode": cur.get("exitCode"), "startTime": cur.get("startTime"), "finishTime": cur.get("finishTime"),
                "ready": iv.get("ready"),
            }
            for e in iv.get("events") or []:
                events[(c["name"], e["name"], e["message"], e["firstTimestamp"])] = e
    return {
        "id": g["id"], "name": g["name"], "resourceGroup": view.record.meta.resourceGroup,
        "state": props["instanceView"]["state"], "provisioningState": props["provisioningState"],
        "containers": containers, "events": events,
    }


def diff(old: dict[str, Any] | None, new: dict[str, Any], replay_events: bool = True) -> list[Message]:
    """Messages that take a watcher from ``old`` (None: never seen) to ``new``."""
    head = {"id": new["id"], "name": new["name"], "resourceGroup": new["resourceGroup"]}
    out: list[Message] = []
    if old is None or (old["state"], old["provisioningState"]) != (new["state"], new["provisioningState"]):
        out.append(("group", {**head, "state": new["state"], "provisioningState": new["provisioningState"]}))
    fields = ("state", "restartCount", "detailStatus", "exitCode", "ready")
    for name, c in new["containers"].items():
        before = (old or {}).get("containers", {}).get(name)
        if before is None or any(before[f] != c[f] for f in fields):
            out.append(("container", {**head, **c}))
    if not replay_events:
        return out
    seen = (old or {}).get("events", {})
    for key, e in new["events"].items():
        if key not in seen or seen[key].get("count") != e.get("count"):
            out.append(("event", {**head, "container": key[0] or None, "event": e}))
    return out


class GroupWatch:
    """The state of the matching groups as this stream last showed it, advanced by store events."""

    def __init__(self, store: Store, only: GroupFilter) -> None:
        self.store, self.only = store, only
        self.records: dict[str, GroupRecord] = {}  # uid -> record
        self.keys: dict[str, str] = {}  # group key -> uid
        self.statuses: dict[str, GroupStatus] = {}
        self.versions: dict[str, int] = {}
        self.shown: dict[str, dict[str, Any]] = {}

    def snapshot(self) -> tuple[int, list[Message]]:
        """Load what matches now; the revision to watch from and the opening messages."""
        rev = self.store.revision()
        out: list[Message] = []
        current = {r.key for r in self.store.list(GROUPS) if self.only.matches(r.key)}
        for key in [k for k in self.keys if k not in current]:
            out += self._gone(key)
        for rec in self.store.list(GROUPS):
            if not self.only.matches(rec.key):
                continue
            record = GroupRecord.model_validate(rec.value)
            self._put_group(rec.key, record, rec.version)
            st = self.store.get(status_key(record.meta.uid))
            if st is not None:
                self.statuses[record.meta.uid] = GroupStatus.model_validate(st.value)
            out += self._show(record.meta.uid, replay_events=record.meta.uid in self.shown)
        return rev, out

    def _put_group(self, key: str, record: GroupRecord, version: int) -> None:
        old = self.keys.get(key)
        if old is not None and old != record.meta.uid:  # deleted and created again under the same name
            self._forget(old)
        self.keys[key] = record.meta.uid
        self.records[record.meta.uid] = record
        self.versions[record.meta.uid] = version

    def _forget(self, uid: str) -> None:
        for table in (self.records, self.statuses, self.versions, self.shown):
            table.pop(uid, None)

    def _gone(self, key: str) -> list[Message]:
        uid = self.keys.pop(key)
        shown = self.shown.get(uid)
        self._forget(uid)
        if shown is None:
            return []
        return [("deleted", {"id": shown["id"], "name": shown["name"], "resourceGroup": shown["resourceGroup"]})]

    def _show(self, uid: str, replay_events: bool = True) -> list[Message]:
        record = self.records[uid]
        key = next(k for k, u in self.keys.items() if u == uid)
        view = GroupView(key=key, version=self.versions[uid], record=record, status=self.statuses.get(uid))
        new = summarize(view)
        out = diff(self.shown.get(uid), new, replay_events)
        self.shown[uid] = new
        return out

    def apply(self, events: list[Any]) -> list[Message]:
        out: list[Message] = []
        for ev in events:
            if ev.key.startswith(GROUPS):
                if not self.only.matches(ev.key):
                    continue
                if ev.type == "delete":
                    if ev.key in self.keys:
                        out += self._gone(ev.key)
                    continue
                record = GroupRecord.model_validate(ev.value)
                self._put_group(ev.key, record, ev.revision)
                out += self._show(record.meta.uid)
            elif ev.key.startswith(STATUS):
                uid = ev.key[len(STATUS):]
                if uid not in self.records or ev.type == "delete":
                    continue
                self.statuses[uid] = GroupStatus.model_validate(ev.value)
                out += self._show(uid)
        return out


def sse(kind: str, data: dict[str, Any], revision: int) -> str:
    return f"id: {revision}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


async def stream(store: Store, only: GroupFilter) -> AsyncIterator[str]:
    watch = GroupWatch(store, only)
    after, opening = await anyio.to_thread.run_sync(watch.snapshot, limiter=stream_threads())
    for kind, data in opening:
        yield sse(kind, data, after)
    yield ": watching\n\n"  # the client knows the snapshot is complete
    quiet = 0.0
    while True:
        try:
            # Not abandoned on cancel: the watch returns within WATCH_WAKE anyway.
            events = await anyio.to_thread.run_sync(store.watch, "/", after, WATCH_WAKE, limiter=stream_threads())
        except Compacted:
            after, messages = await anyio.to_thread.run_sync(watch.snapshot, limiter=stream_threads())
            for kind, data in messages:
                yield sse(kind, data, after)
            continue
        if not events:
            quiet += WATCH_WAKE
            if quiet >= KEEPALIVE:
                quiet = 0.0
                yield ": keepalive\n\n"
            continue
        after = events[-1].revision
        relevant = [e for e in events if e.key.startswith((GROUPS, STATUS))]
        for kind, data in watch.apply(relevant):
            quiet = 0.0
            yield sse(kind, data, after)


def _response(request: Request, only: GroupFilter) -> StreamingResponse:
    return StreamingResponse(
        stream(request.app.state.plane.store, only), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(PROVIDER + "/containerGroups/{name}/events")
def group_events(sub: str, rg: str, name: str, request: Request) -> StreamingResponse:
    """State changes of one container group (it need not exist yet)."""
    return _response(request, GroupFilter(sub, rg, name))


@router.get(PROVIDER + "/events")
def resource_group_events(sub: str, rg: str, request: Request) -> StreamingResponse:
    """State changes of every container group in a resource group."""
    return _response(request, GroupFilter(sub, rg))
