"""What the virtual node's integration tests share: the Kubernetes side kept in memory (there is no
API server on these machines), the TokenReview / SubjectAccessReview answers, a web pod, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import PodStatus
from lightkube.models.meta_v1 import Status
from lightkube.resources.core_v1 import Event, Pod

from corral.kube.authz import Attributes, Unauthenticated, User


class PodApi:
    """The Kubernetes calls the pod controller makes, kept in memory (no API server exists here)."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], Pod] = {}
        self.events: list[Event] = []
        self.deleted: list[str] = []
        self._watchers: list[asyncio.Queue[tuple[str, Pod]]] = []

    def add(self, pod: Pod) -> None:
        assert pod.metadata is not None
        self.pods[(pod.metadata.namespace or "", pod.metadata.name or "")] = pod
        self._emit("ADDED", pod)

    def _emit(self, kind: str, pod: Pod) -> None:
        for q in self._watchers:
            q.put_nowait((kind, pod))

    async def list(self, res: Any, namespace: str | None = None, fields: Any = None) -> AsyncIterator[Pod]:
        for pod in list(self.pods.values()):
            yield pod

    async def watch(self, res: Any, namespace: str | None = None, fields: Any = None) -> AsyncIterator[Any]:
        if res is not Pod:
            await asyncio.Event().wait()  # ConfigMaps and Secrets never change here
        q: asyncio.Queue[tuple[str, Pod]] = asyncio.Queue()
        self._watchers.append(q)
        while True:
            yield await q.get()

    async def get(self, res: Any, name: str, namespace: str | None = None) -> Any:
        raise ApiError(status=Status(code=404, message=f"{name} not found"))

    async def create(self, obj: Any, name: str | None = None, namespace: str | None = None) -> Any:
        if isinstance(obj, Event):
            self.events.append(obj)
        return obj

    async def patch(self, res: Any, name: str, body: dict[str, Any], namespace: str | None = None,
                    patch_type: Any = None) -> Pod:
        pod = self.pods[(namespace or "", name)]
        pod.status = PodStatus.from_dict(body["status"])
        return pod

    async def delete(self, res: Any, name: str, namespace: str | None = None, grace_period: int | None = None) -> None:
        pod = self.pods.pop((namespace or "", name))
        self.deleted.append(name)
        self._emit("DELETED", pod)

    def mark_deleting(self, namespace: str, name: str) -> None:
        pod = self.pods[(namespace, name)]
        assert pod.metadata is not None
        pod.metadata.deletionTimestamp = datetime.now(UTC)
        self._emit("MODIFIED", pod)


class Tokens:
    """The TokenReview / SubjectAccessReview answers an API server would give, for the kubelet API test."""

    users = {"alice-token": User("alice", ("system:masters",)), "bob-token": User("bob")}

    async def authenticate_token(self, token: str) -> User:
        if token not in self.users:
            raise Unauthenticated("the token was rejected by the API server")
        return self.users[token]

    async def authorize(self, user: User, attrs: Attributes) -> bool:
        return user.name == "alice" or (attrs.subresource == "stats" and attrs.verb == "get")


BUSY = {"name": "busy", "image": "corral/busybox:latest",
        "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do :; done"],
        "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "100m"}}}


# Counts its runs in an emptyDir, prints the number, crashes after a few seconds (restarted by the policy).
CRASH = {"name": "crash", "image": "corral/busybox:latest", "volumeMounts": [{"name": "scratch", "mountPath": "/s"}],
         "command": ["sh", "-c", "n=$(cat /s/n 2>/dev/null || echo 0); echo run $n; echo $((n+1)) > /s/n; "
                                 "sleep 4; exit 1"],
         "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}}}


def web_pod(name: str, uid: str, node: str, busy: bool = False, crash: bool = False,
            as_user: bool = False) -> Pod:
    """busybox httpd on 8080 (Ready from a tcpSocket probe); with ``busy``, a second container spinning on
    a tenth of a core; with ``crash``, one that exits every few seconds; with ``as_user``, everything runs
    as user 1000 (group 3000, fsGroup 2000) and the web container has the pod's name in a downwardAPI file
    of mode 0440 (/etc/podinfo/name)."""
    web: dict[str, Any] = {
        "name": "web", "image": "corral/busybox:latest", "command": ["sh", "-c"],
        "args": ["echo started $(POD); exec httpd -f -p 8080 -h /"],
        "env": [{"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"containerPort": 8080, "name": "http"}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
    spec: dict[str, Any] = {"nodeName": node, "containers": [web, *([BUSY] if busy else []),
                                                             *([CRASH] if crash else [])], "volumes": []}
    if crash:
        spec["volumes"].append({"name": "scratch", "emptyDir": {}})
    if as_user:
        spec["securityContext"] = {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000}
        spec["volumes"].append({"name": "podinfo", "downwardAPI": {"defaultMode": 0o440, "items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}})
        web["volumeMounts"] = [{"name": "podinfo", "mountPath": "/etc/podinfo"}]
    return Pod.from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                                          "uid": uid},
                          "spec": spec, "status": {"phase": "Pending"}})


async def wait(pred: Any, timeout: float = 40, what: str = "") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await pred() if asyncio.iscoroutinefunction(pred) else pred()
        if got:
            return got
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def condition(pod: Pod, kind: str) -> str | None:
    return next((c.status for c in (pod.status.conditions if pod.status else None) or [] if c.type == kind), None)
