"""Container group (as Corral's API renders it) -> pod status.

Pure: the pod controller calls it whenever Corral's event stream says the group changed, and patches
the pod's status when the result differs. Ready comes from the containers' real readiness (their
probes), never from "it runs".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lightkube.models.core_v1 import (
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    HostIP,
    Pod,
    PodCondition,
    PodIP,
    PodStatus,
)
from lightkube.utils.quantity import parse_quantity

PHASES = {"Pending": "Pending", "Running": "Running", "Succeeded": "Succeeded", "Failed": "Failed"}


def parse_time(v: Any) -> datetime | None:
    """An ISO 8601 time of Corral's (instanceView, log lines); None when absent or unreadable."""
    if not isinstance(v, str) or not v:
        return None
    try:
        t = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def instance_views(group: dict[str, Any] | None, key: str) -> dict[str, dict[str, Any]]:
    """container name -> its instanceView, for ``containers`` or ``initContainers``."""
    if group is None:
        return {}
    return {c["name"]: c["properties"].get("instanceView") or {} for c in group["properties"].get(key) or []}


def _group_events(group: dict[str, Any] | None) -> list[dict[str, Any]]:
    return ((group or {}).get("properties", {}).get("instanceView") or {}).get("events") or []


def _state(cur: dict[str, Any] | None, waiting_reason: str,
           waiting_message: str | None) -> ContainerState:
    cur = cur or {}
    st = cur.get("state")
    if st == "Running":
        return ContainerState(running=ContainerStateRunning(startedAt=parse_time(cur.get("startTime"))))
    if st == "Terminated":
        code = cur.get("exitCode")
        return ContainerState(terminated=ContainerStateTerminated(
            exitCode=code if code is not None else -1, reason=cur.get("detailStatus") or None,
            startedAt=parse_time(cur.get("startTime")), finishedAt=parse_time(cur.get("finishTime"))))
    return ContainerState(waiting=ContainerStateWaiting(reason=waiting_reason, message=waiting_message))


def _container_status(name: str, image: str, view: dict[str, Any] | None, uid: str, init: bool,
                      group: dict[str, Any] | None) -> ContainerStatus:
    view = view or {}
    cur = view.get("currentState") or {}
    prev = view.get("previousState")
    restarts = view.get("restartCount", 0)
    reason, message = "ContainerCreating", None
    if cur.get("state") == "Waiting":
        detail = cur.get("detailStatus") or ""
        pull = [e for e in _group_events(group) if e.get("name") == "Failed" and "pull image" in e.get("message", "")]
        if pull and not any(e.get("name") == "Pulled" for e in _group_events(group)[-3:]):
            reason, message = "ErrImagePull", pull[-1]["message"]
        elif prev and prev.get("state") == "Terminated":
            reason, message = "CrashLoopBackOff", detail or None
        elif detail and detail not in ("Restarting", "Updating"):
            reason, message = "CreateContainerError", detail
    ready = cur.get("state") == "Running" and view.get("ready") is True
    last = ContainerState()
    if prev and prev.get("state") == "Terminated":
        last = _state(prev, "", None)
    running = cur.get("state") == "Running"
    return ContainerStatus(
        name=name, image=image, imageID="", ready=ready, restartCount=restarts,
        started=running if not init else None,
        state=_state(cur, reason, message), lastState=last,
        containerID=f"corral://{uid}/{name}" if cur.get("state") in ("Running", "Terminated") else None,
    )


def _condition(kind: str, ok: bool, old: dict[str, PodCondition], now: datetime,
               reason: str | None = None) -> PodCondition:
    status = "True" if ok else "False"
    before = old.get(kind)
    since = before.lastTransitionTime if before is not None and before.status == status else now
    return PodCondition(type=kind, status=status, lastTransitionTime=since, reason=None if ok else reason)


def qos_class(pod: Pod) -> str:
    assert pod.spec is not None
    requests, limits, guaranteed = False, False, True
    for c in pod.spec.containers:
        req = dict(c.resources.requests or {}) if c.resources else {}
        lim = dict(c.resources.limits or {}) if c.resources else {}
        requests = requests or bool(req)
        limits = limits or bool(lim)
        for k in ("cpu", "memory"):
            want = req.get(k, lim.get(k))
            if k not in lim or want is None or parse_quantity(want) != parse_quantity(lim[k]):
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def pod_status(pod: Pod, group: dict[str, Any] | None, host_ip: str, now: datetime | None = None,
               waiting: tuple[str, str] | None = None) -> PodStatus:
    """The pod's status from its group (None: not created yet). ``waiting`` = (reason, message) the controller
    holds the pod back for (e.g. a missing ConfigMap: CreateContainerConfigError)."""
    assert pod.spec is not None and pod.metadata is not None
    now = now or datetime.now(UTC)
    old_status = pod.status or PodStatus()
    old = {c.type: c for c in old_status.conditions or []}
    uid = pod.metadata.uid or ""
    views, init_views = instance_views(group, "containers"), instance_views(group, "initContainers")
    iv = ((group or {}).get("properties", {}).get("instanceView")) or {}
    state = iv.get("state", "Pending") if group is not None else "Pending"

    statuses = [_container_status(c.name, c.image or "", views.get(c.name), uid, False, group)
                for c in pod.spec.containers]
    sidecars = {c.name for c in pod.spec.initContainers or [] if c.restartPolicy == "Always"}
    init_statuses = [_container_status(c.name, c.image or "", init_views.get(c.name) or views.get(c.name), uid,
                                       True, group) for c in pod.spec.initContainers or []]
    for s in init_statuses:
        if s.name in sidecars:  # a sidecar runs among the containers; Kubernetes reports ready/started for it
            s.ready = bool(s.state and s.state.running) and (views.get(s.name) or {}).get("ready") is True
            s.started = bool(s.state and s.state.running)
    if waiting is not None:
        reason, message = waiting
        for s in statuses:
            if s.state is not None and s.state.waiting is not None:
                s.state.waiting = ContainerStateWaiting(reason=reason, message=message)

    initialized = all(
        (s.state is not None and s.state.terminated is not None and s.state.terminated.exitCode == 0)
        or s.name in sidecars for s in init_statuses)
    if group is not None and state in ("Running", "Succeeded"):
        initialized = True
    containers_ready = bool(statuses) and all(s.ready for s in statuses)
    phase = PHASES.get(state, "Failed" if state == "Stopped" else "Pending")
    if group is None:
        phase = "Pending"
    ready_reason = "ContainersNotReady" if phase in ("Pending", "Running") else "PodCompleted"
    conditions = [
        _condition("PodReadyToStartContainers", bool(iv.get("privateIp")), old, now),
        _condition("Initialized", initialized, old, now, "ContainersNotInitialized"),
        _condition("Ready", containers_ready and phase == "Running", old, now, ready_reason),
        _condition("ContainersReady", containers_ready and phase == "Running", old, now, ready_reason),
        _condition("PodScheduled", True, old, now),
    ]
    ip = iv.get("privateIp")
    reason = message = None
    if state == "Stopped":
        reason, message = "Stopped", "the container group was stopped in Corral"
    return PodStatus(
        phase=phase, conditions=conditions, containerStatuses=statuses,
        initContainerStatuses=init_statuses or None,
        podIP=ip, podIPs=[PodIP(ip=ip)] if ip else None,
        hostIP=host_ip, hostIPs=[HostIP(ip=host_ip)],
        startTime=old_status.startTime or now,
        qosClass=old_status.qosClass or qos_class(pod),
        reason=reason, message=message,
    )
