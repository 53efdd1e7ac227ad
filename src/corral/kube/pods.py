"""The pod controller: pods bound to the virtual node <-> Corral container groups.

Level-triggered: every trigger (a pod watch event, a Corral event-stream message about a group, a
ConfigMap or Secret change, the periodic resync) only queues the pod's key; one ``sync`` then compares
the pod with its group and takes the next step. Safe to repeat, and safe across a restart of the
connector: groups are found again by name and tags (adopted, never recreated or deleted while their
pod exists), and a group whose pod is gone is removed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.authentication_v1 import BoundObjectReference, TokenRequestSpec
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Event, Pod, Secret, ServiceAccount
from lightkube.types import PatchType

from corral.kube.corral_api import CorralApi, CorralRefused, CorralUnavailable
from corral.kube.mapping import (
    TAG_NODE,
    TAG_UID,
    MappingSettings,
    MissingReference,
    PodInputs,
    Refs,
    TokenKey,
    group_name,
    pod_to_group,
    references,
)
from corral.kube.status import pod_status

log = logging.getLogger(__name__)

TAG_DIGEST = "k8s-digest"
RESYNC = 60.0
RETRY_BASE, RETRY_MAX = 1.0, 30.0
TOKEN_REFRESH = 0.8  # share of a token's lifetime after which a new one is requested (as kubelet)
COMPONENT = "corral-kube-node"


def key_of(pod: Pod) -> str:
    assert pod.metadata is not None
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def _b(data: dict[str, str] | None, binary: dict[str, str] | None = None, b64: bool = False) -> dict[str, bytes]:
    out = {k: (base64.b64decode(v) if b64 else v.encode()) for k, v in (data or {}).items()}
    out |= {k: base64.b64decode(v) for k, v in (binary or {}).items()}
    return out


@dataclass
class Token:
    value: str
    refresh_at: float


class PodController:
    def __init__(self, kube: AsyncClient, corral: CorralApi, settings: MappingSettings, host_ip: str,
                 workers: int = 4) -> None:
        self.kube, self.corral, self.settings = kube, corral, settings
        self.node = settings.node_name
        self.host_ip = host_ip
        self.pods: dict[str, Pod] = {}
        self.groups: dict[str, str] = {}  # group name -> pod key
        self.refs: dict[str, Refs] = {}
        self.usage: dict[str, tuple[float, float]] = {}
        self._patched: dict[str, dict[str, Any]] = {}
        self._warned: set[tuple[str, str]] = set()
        self._tokens: dict[tuple[str, str, TokenKey], Token] = {}
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._running: set[str] = set()
        self._dirty: set[str] = set()
        self._fails: dict[str, int] = {}
        self._workers = workers
        self.started = asyncio.Event()

    # usage for the node's capacity ------------------------------------------------------------------------------
    def own_usage(self) -> tuple[float, float, int]:
        return (sum(u[0] for u in self.usage.values()), sum(u[1] for u in self.usage.values()), len(self.usage))

    # queue ------------------------------------------------------------------------------------------------------
    def enqueue(self, key: str, delay: float = 0.0) -> None:
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.enqueue, key)
            return
        if key in self._running:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._running.add(key)
            try:
                await self.sync(key)
                self._fails.pop(key, None)
            except (CorralUnavailable, CorralRefused, ApiError, MissingReference, OSError) as exc:
                n = self._fails.get(key, 0)
                self._fails[key] = n + 1
                delay = min(RETRY_MAX, RETRY_BASE * 2 ** n)
                log.info("pod %s: %s; retrying in %.0fs", key, exc, delay)
                self.enqueue(key, delay)
            except Exception:
                log.exception("pod %s: sync failed", key)
                self.enqueue(key, RETRY_MAX)
            finally:
                self._running.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)

    # start ------------------------------------------------------------------------------------------------------
    async def start(self) -> list[asyncio.Task[Any]]:
        """List the node's pods and adopt (or remove) existing groups, then run the loops."""
        async for pod in self.kube.list(Pod, namespace="*", fields={"spec.nodeName": self.node}):
            self._remember(pod)
        await self.remove_orphans()
        for key in list(self.pods):
            self.enqueue(key)
        tasks = [asyncio.create_task(self._worker()) for _ in range(self._workers)]
        tasks += [asyncio.create_task(self._watch_pods()), asyncio.create_task(self._watch_corral()),
                  asyncio.create_task(self._watch_inputs(ConfigMap)), asyncio.create_task(self._watch_inputs(Secret)),
                  asyncio.create_task(self._resync())]
        self.started.set()
        return tasks

    def _remember(self, pod: Pod) -> None:
        key = key_of(pod)
        self.pods[key] = pod
        assert pod.metadata is not None
        self.groups[group_name(pod.metadata.namespace or "default", pod.metadata.name or "")] = key

    async def remove_orphans(self) -> None:
        """Delete every group of this node whose pod (by uid) is gone: nothing is left billing."""
        uids = {p.metadata.uid for p in self.pods.values() if p.metadata}
        for g in await self.corral.list_groups():
            tags = g.get("tags") or {}
            if tags.get(TAG_NODE) != self.node or tags.get(TAG_UID) in uids:
                continue
            log.info("removing group %s: its pod (uid %s) no longer exists", g["name"], tags.get(TAG_UID))
            await self.corral.delete_group(g["name"])

    async def _watch_pods(self) -> None:
        while True:
            try:
                async for kind, pod in self.kube.watch(Pod, namespace="*", fields={"spec.nodeName": self.node}):
                    if kind == "DELETED":
                        key = key_of(pod)
                        self.pods.pop(key, None)
                        self.enqueue(key)
                        continue
                    self._remember(pod)
                    self.enqueue(key_of(pod))
            except Exception as exc:  # the watch ends on errors and timeouts: start it again
                log.info("pod watch ended (%s); restarting", exc)
                await asyncio.sleep(1.0)

    async def _watch_corral(self) -> None:
        """Status comes back promptly from Corral's event stream (no polling)."""
        delay = RETRY_BASE
        while True:
            try:
                async for kind, data in self.corral.events():
                    delay = RETRY_BASE
                    key = self.groups.get(data.get("name", ""))
                    if key is not None and kind in ("group", "container", "deleted", "event"):
                        self.enqueue(key)
            except Exception as exc:
                log.info("Corral event stream ended (%s); reconnecting in %.0fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)
            for key in list(self.pods):  # whatever changed meanwhile
                self.enqueue(key)

    async def _watch_inputs(self, kind: type[ConfigMap] | type[Secret]) -> None:
        """A changed ConfigMap or Secret re-maps the pods that use it (volumes are updated in place)."""
        attr = "config_maps" if kind is ConfigMap else "secrets"
        while True:
            try:
                async for event, obj in self.kube.watch(kind, namespace="*"):
                    assert obj.metadata is not None
                    ns, name = obj.metadata.namespace, obj.metadata.name
                    for key, refs in list(self.refs.items()):
                        if key.split("/", 1)[0] == ns and name in getattr(refs, attr):
                            if event != "ADDED" or key in self._fails:
                                self.enqueue(key)
            except Exception as exc:
                log.info("%s watch ended (%s); restarting", kind.__name__, exc)
                await asyncio.sleep(5.0)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(RESYNC)
            for key in list(self.pods):
                self.enqueue(key)
            try:
                await self.remove_orphans()
            except (CorralUnavailable, CorralRefused) as exc:
                log.info("orphan sweep skipped: %s", exc)

    # one pod ----------------------------------------------------------------------------------------------------
    async def sync(self, key: str) -> None:
        ns, name = key.split("/", 1)
        gname = group_name(ns, name)
        pod = self.pods.get(key)
        group = await self.corral.get_group(gname)
        if pod is None:
            self.usage.pop(key, None)
            self.refs.pop(key, None)
            self._patched.pop(key, None)
            if group is not None and (group.get("tags") or {}).get(TAG_NODE) == self.node:
                await self.corral.delete_group(gname)
            return
        assert pod.metadata is not None
        uid = pod.metadata.uid or ""
        if group is not None and (group.get("tags") or {}).get(TAG_UID) != uid:
            # The group of an earlier pod of the same name (a StatefulSet pod recreated): replace it.
            await self.corral.delete_group(gname)
            self.enqueue(key, 1.0)
            return
        if pod.metadata.deletionTimestamp is not None:
            await self._finish_delete(pod, gname, group)
            return
        phase = pod.status.phase if pod.status else None
        waiting: tuple[str, str] | None = None
        if phase not in ("Succeeded", "Failed"):
            try:
                group = await self._apply(pod, gname, group)
            except MissingReference as exc:
                await self.event(pod, "Failed", f"Error: {exc.message}")
                waiting = ("CreateContainerConfigError", exc.message)
                self._fails[key] = self._fails.get(key, 0)
                self.enqueue(key, min(RETRY_MAX, RETRY_BASE * 2 ** self._fails[key]))
                self._fails[key] += 1
        if group is None and phase in ("Succeeded", "Failed"):
            return
        await self._update_status(pod, group, waiting)

    async def _apply(self, pod: Pod, gname: str, group: dict[str, Any] | None) -> dict[str, Any] | None:
        """Create the group, or update it in place when the mapping changed (ConfigMap, token, image)."""
        key = key_of(pod)
        refs = references(pod)
        self.refs[key] = refs
        inputs = await self._inputs(pod, refs)
        plan = pod_to_group(pod, inputs, self.settings)
        digest = plan.digest()
        plan.body["tags"][TAG_DIGEST] = digest
        props = plan.body["properties"]
        self.usage[key] = (sum(c["properties"]["resources"]["requests"]["cpu"] for c in props["containers"]),
                           sum(c["properties"]["resources"]["requests"]["memoryInGB"] for c in props["containers"]))
        assert pod.metadata is not None
        for w in plan.warnings:
            if (pod.metadata.uid or "", w.message) not in self._warned:
                self._warned.add((pod.metadata.uid or "", w.message))
                await self.event(pod, w.reason, w.message)
        if group is not None and (group.get("tags") or {}).get(TAG_DIGEST) == digest:
            return group
        try:
            result = await self.corral.put_group(gname, plan.body)
        except CorralRefused as exc:
            if exc.status == 409 and group is not None and "cannot change" in exc.message:
                # The pod changed in a way Corral cannot apply in place: Kubernetes pods are immutable there.
                await self.event(pod, "UpdateNotApplied", f"the change cannot be applied to the running group: "
                                 f"{exc.message}")
                return group
            if 400 <= exc.status < 500 and exc.status not in (409, 429):
                await self.event(pod, "Failed", f"Corral refused the pod: {exc.message}")
            raise
        if group is None:
            await self.event(pod, "Scheduled", f"container group {gname} created in Corral", "Normal")
        return result

    async def _finish_delete(self, pod: Pod, gname: str, group: dict[str, Any] | None) -> None:
        """Delete the group; once it is gone, complete the graceful delete of the pod (as kubelet does)."""
        assert pod.metadata is not None
        key = key_of(pod)
        if group is not None:
            state = (group.get("properties", {}).get("provisioningState") or "")
            if state != "Deleting":
                await self.corral.delete_group(gname)
                await self.event(pod, "Killing", "deleting container group " + gname, "Normal")
            self.enqueue(key, 0.5)  # Corral's event stream says "deleted" too; this is the fallback
            return
        self.usage.pop(key, None)
        try:
            await self.kube.delete(Pod, pod.metadata.name or "", namespace=pod.metadata.namespace, grace_period=0)
        except ApiError as exc:
            if exc.status.code != 404:
                raise

    async def _update_status(self, pod: Pod, group: dict[str, Any] | None,
                             waiting: tuple[str, str] | None) -> None:
        assert pod.metadata is not None
        key = key_of(pod)
        status = pod_status(pod, group, self.host_ip, waiting=waiting)
        new = status.to_dict()
        old = self._patched.get(key)
        if old is not None and _without_times(old) == _without_times(new):
            return
        patched = await self.kube.patch(Pod.Status, pod.metadata.name or "", {"status": new},
                                        namespace=pod.metadata.namespace, patch_type=PatchType.MERGE)
        self._patched[key] = new
        if patched.metadata and patched.metadata.uid == pod.metadata.uid and key in self.pods:
            self.pods[key].status = patched.status

    # inputs -----------------------------------------------------------------------------------------------------
    async def _inputs(self, pod: Pod, refs: Refs) -> PodInputs:
        assert pod.metadata is not None
        ns = pod.metadata.namespace or "default"
        inputs = PodInputs()
        for name in refs.config_maps:
            try:
                cm = await self.kube.get(ConfigMap, name, namespace=ns)
                inputs.config_maps[name] = _b(cm.data, cm.binaryData)
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
                inputs.config_maps[name] = None
        for name in refs.secrets:
            try:
                s = await self.kube.get(Secret, name, namespace=ns)
                inputs.secrets[name] = _b(s.data, b64=True) | {k: v.encode() for k, v in (s.stringData or {}).items()}
            except ApiError as exc:
                if exc.status.code != 404:
                    raise
                inputs.secrets[name] = None
        for tk in refs.tokens:
            inputs.tokens[tk] = await self._token(pod, tk)
        return inputs

    async def _token(self, pod: Pod, tk: TokenKey) -> str:
        """A bound service-account token from the TokenRequest API, refreshed at 80% of its lifetime."""
        assert pod.metadata is not None
        ns, uid = pod.metadata.namespace or "default", pod.metadata.uid or ""
        cache_key = (ns, uid, tk)
        now = time.monotonic()
        cached = self._tokens.get(cache_key)
        if cached is not None and now < cached.refresh_at:
            return cached.value
        spec = TokenRequestSpec(audiences=[tk.audience] if tk.audience else [], expirationSeconds=tk.expiration,
                                boundObjectRef=BoundObjectReference(apiVersion="v1", kind="Pod",
                                                                    name=pod.metadata.name, uid=uid))
        answer = await self.kube.create(ServiceAccount.Token(spec=spec), tk.service_account, namespace=ns)
        assert answer.status is not None
        ttl = tk.expiration
        if answer.status.expirationTimestamp is not None:
            ttl = max(60, int((answer.status.expirationTimestamp - datetime.now(UTC)).total_seconds()))
        self._tokens[cache_key] = Token(answer.status.token, now + ttl * TOKEN_REFRESH)
        for k in [k for k in self._tokens if k[1] == uid and k != cache_key and k[2] == tk]:
            del self._tokens[k]
        return answer.status.token

    # events -----------------------------------------------------------------------------------------------------
    async def event(self, pod: Pod, reason: str, message: str, kind: str = "Warning") -> None:
        assert pod.metadata is not None
        now = datetime.now(UTC)
        ev = Event(
            metadata=ObjectMeta(name=f"{pod.metadata.name}.{uuid.uuid4().hex[:16]}", namespace=pod.metadata.namespace),
            involvedObject=ObjectReference(apiVersion="v1", kind="Pod", name=pod.metadata.name,
                                           namespace=pod.metadata.namespace, uid=pod.metadata.uid),
            reason=reason, message=message[:1024], type=kind, count=1, firstTimestamp=now, lastTimestamp=now,
            source=EventSource(component=COMPONENT, host=self.node),
            reportingComponent=COMPONENT, reportingInstance=self.node,
        )
        try:
            await self.kube.create(ev)
        except ApiError as exc:
            log.info("event %s on pod %s not recorded: %s", reason, key_of(pod), exc)


def _without_times(status: dict[str, Any]) -> dict[str, Any]:
    """The status without timestamps that the mapping recomputes, to tell a real change from a repeat."""
    out = dict(status)
    out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status.get("conditions")
                         or []]
    return out

