"""One group's reconciler on a node.

Each pass compares the group's desired state (the record from the control
plane) with what is on the host (sandbox, containers, exit codes) and takes
the next step: build the sandbox, pull images, run init containers in order,
start or restart containers under the restart policy with back-off, stop, or
tear everything down. Every step is safe to repeat, so a pass may be cut at
any point (agent killed) and the next agent's first pass picks up from the
host's state.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from corral.errors import CorralError, NetworkFeatureUnsupported, NotAssigned, StaleBinding
from corral.link.protocol import ControlPlaneLink
from corral.model.group import Container, GroupProperties, InitContainer, Probe
from corral.model.records import GroupRecord
from corral.model.status import ContainerStateView, ContainerStatus, GroupStatus, record_event
from corral.net.dns.resolv import dns_settings
from corral.node.host import NodeHost, container_id, isolation_of, registry_credentials, volume_mounts
from corral.node.network.etcfiles import write_hosts
from corral.node.probes import ProbeKind, Prober, ProbeStep, runner_for
from corral.node.runtime.runtime import ContainerState

if TYPE_CHECKING:
    from corral.node.lease import NodeLease

log = logging.getLogger(__name__)

# Restart back-off: doubles per consecutive failure, reset after a long enough run.
BACKOFF_BASE = 1.0
BACKOFF_MAX = 60.0
BACKOFF_RESET_AFTER = 60.0
POLL_INTERVAL = 0.5
# Exits wake the worker (ExitDispatcher); this sweep only catches what inotify cannot see
# (a conmon killed without writing its exit file).
RUNNING_SWEEP = 10.0
# How soon a worker looks again when the node may not start containers (its lease lapsed).
FENCED_RETRY = 0.5


def spec_hash(c: Container | InitContainer) -> str:
    return hashlib.sha256(json.dumps(c.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def terminated_view(st: ContainerState, started: datetime | None) -> ContainerStateView:
    code = st.exit_code if st.exit_code is not None else -1
    detail = "OOMKilled" if st.oom_killed else ("Completed" if code == 0 else "Error")
    return ContainerStateView(
        state="Terminated",
        startTime=st.started_at or started,
        finishTime=st.finished_at or datetime.now(UTC),
        exitCode=code,
        detailStatus=detail,
    )


class GroupWorker:
    def __init__(self, key: str, group: GroupRecord, link: ControlPlaneLink, host: NodeHost,
                 lease: NodeLease | None = None, session: int = 0,
                 on_lost: Callable[[str], None] | None = None, fenced: bool = False) -> None:
        self.key = key
        self.uid = group.meta.uid
        self.epoch = group.meta.epoch  # the binding this worker carries out; another is another worker's
        self.link = link
        self.host = host
        self.finished = False
        self._desired: GroupRecord | None = group
        self._relinquish = False
        self._wake = threading.Condition()
        self._dirty = True
        self._stopping = False
        # A remote agent's lease: containers start only while it holds, for records of its session.
        self._lease = lease
        self._session = session
        self._on_lost = on_lost
        self._fenced = fenced  # exits seen until the next full pass were the node fencing itself
        self._refused = False  # this pass could not start a container (fenced)
        self.status = self._last_status() or GroupStatus(uid=self.uid, node=group.meta.node or "")
        self.status.node = group.meta.node or self.status.node
        self.status.epoch = self.epoch
        self._reported = ""
        # name -> (consecutive failures, monotonic time the next start is allowed)
        self._backoff: dict[str, tuple[int, float]] = {}
        self._started_mono: dict[str, float] = {}
        self._prober = Prober(runner_for(host.runtime))
        self._host_aliases = False  # whether the sandbox's hosts file carries the group's hostAliases
        self._started_ok: dict[str, str] = {}  # container -> the run (epoch) whose startup probe succeeded
        self._restart_policy = group.spec.properties.restartPolicy
        # The volumes spec last prepared on the host, so an unchanged one is not redone every pass.
        self._volumes_prepared: str | None = None
        self._volume_paths: dict[str, Path] = {}
        self._unlisted_checked: int | None = None  # generation whose leftover containers were removed
        self._group_rules: str | None = None  # the group's own security rules in force (JSON)
        self._thread = threading.Thread(target=self._run, name=f"group-{self.uid}", daemon=True)

    # control ---------------------------------------------------------------
    def start(self) -> None:
        self.host.exits.subscribe(self.uid, self.poke)
        self._thread.start()

    def _last_status(self) -> GroupStatus | None:
        try:
            return self.link.last_status(self.key, self.uid)
        except CorralError as exc:  # unreachable control plane: restart counts start afresh
            log.warning("group %s: no last status (%s)", self.uid, exc.message)
            return None

    def update(self, group: GroupRecord | None, session: int | None = None) -> None:
        with self._wake:
            self._desired = group
            if session is not None:
                self._session = session
            self.poke()

    def relinquish(self) -> None:
        """The group is no longer this node's (moved away while the node was cut off): remove the local
        copy and everything of it here, without touching the control plane's records."""
        with self._wake:
            self._desired, self._relinquish = None, True
            self.poke()

    def fence(self) -> None:
        """The node lost its lease and killed its containers: the exits to come are fencing, not failures."""
        with self._wake:
            self._fenced = True
            self.poke()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def has_own_security_group(self) -> bool:
        group = self._desired
        return self._group_rules is not None or (
            group is not None and group.spec.properties.networkSecurityGroup is not None)

    def poke(self) -> None:
        """Run a pass soon (e.g. one of the group's containers exited). ``_wake`` is reentrant: callers
        holding it change what the pass reads and poke in one step."""
        with self._wake:
            self._dirty = True
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._stopping:
                    return
                group = self._desired
                self._dirty = False
            try:
                delay = self.reconcile(group)
            except Exception as exc:  # keep going: the next pass retries from the host's state
                log.exception("group %s: reconcile failed", self.uid)
                record_event(self.status.events, "ReconcileFailed", str(exc), "Warning")
                delay = 2.0
            self._report()
            if self.finished:
                return
            with self._wake:
                if not self._dirty and not self._stopping:
                    self._wake.wait(delay)

    def _apply_group_rules(self, props: GroupProperties, subnet_id: str | None) -> None:
        """The group's own security group, applied to its sandbox; re-read on every pass the agent
        triggers after a network change, applied only when the rules differ from what is in place."""
        nsg = props.networkSecurityGroup
        if nsg is None and self._group_rules is None:
            return
        rules = self.link.group_rules(self.key, nsg.id, subnet_id) if nsg is not None else []
        text = json.dumps([r.model_dump(mode="json") for r in rules], sort_keys=True)
        if text == self._group_rules:
            return
        try:
            self.host.network.set_group_rules(self.uid, rules)
            record_event(self.status.events, "SecurityRulesApplied", f"{len(rules)} rule(s) of the group's "
                         "network security group in force")
        except NetworkFeatureUnsupported as exc:
            record_event(self.status.events, "SecurityRulesIgnored", exc.message, "Warning")
        self._group_rules = text

    def _report(self) -> None:
        if self.finished and (self.status.released or self._relinquish):
            return
        text = self.status.model_dump_json()
        if text == self._reported:
            return
        try:
            self.link.report(self.key, self.status)
        except (NotAssigned, StaleBinding) as exc:
            # Another binding is in force: the agent checks the assignment again and relinquishes ours.
            log.info("group %s: report refused (%s)", self.uid, exc.message)
            if self._on_lost is not None:
                self._on_lost(self.key)
            return
        except CorralError as exc:  # the control plane is unreachable: the next pass reports again
            log.debug("group %s: report not delivered: %s", self.uid, exc.message)
            return
        self._reported = text

    def _may_start(self) -> contextlib.AbstractContextManager[bool]:
        if self._lease is None:
            return contextlib.nullcontext(True)
        return self._lease.starting(self._session)

    # reconcile -------------------------------------------------------------
    def reconcile(self, group: GroupRecord | None) -> float | None:
        """One pass; returns how long to wait before the next one unless woken."""
        if self._relinquish:
            self._release(local_only=True)
            return None
        if group is None or group.meta.deleting:
            self._release()
            return None
        if group.meta.refit and group.meta.desiredState == "Running":
            # It asks this node for more than it held: nothing new is carried out (no start, no resize)
            # until the scheduler has said it still fits here, or moves it (GroupMeta.refit).
            return None
        self._refused = False
        props = group.spec.properties
        self._restart_policy = props.restartPolicy
        self.status.observedGeneration = group.meta.generation
        if props.osType != "Linux":
            self.status.state = "Pending"
            record_event(
                self.status.events,
                "UnsupportedOsType",
                f"node {self.status.node} runs Linux containers only; the {props.osType} group stays Pending",
                "Warning",
            )
            return None
        if group.meta.desiredState == "Stopped":
            self._stop_all(props, "Stopped")
            self.host.remove_sandbox(self.uid)
            self.status.observedRestartGeneration = group.meta.restartGeneration
            self.status.state = "Stopped"
            self.status.stoppedAt = self.status.stoppedAt or datetime.now(UTC)
            return None
        if group.meta.evicting:
            # A drain (or a lack of room here) moves the group: stop it here; the control plane then binds
            # it elsewhere.
            if not self.status.evicted:
                self._stop_all(props, "Evicted")
                self.host.remove_sandbox(self.uid)
                record_event(self.status.events, "Evicted", group.meta.evictReason or (
                    f"node {self.status.node} is being drained; the group moves to another node"))
            self.status.state, self.status.evicted = "Stopped", True
            return None
        self.status.evicted = False
        if group.meta.restartGeneration != self.status.observedRestartGeneration:
            self._stop_all(props, "Restarted")
            self._backoff.clear()
            self.status.initContainers = {}
            for cs in self.status.containers.values():
                # A restart of the group starts everything afresh.
                cs.previousState = cs.currentState if cs.currentState.state != "Waiting" else cs.previousState
                cs.currentState = ContainerStateView(state="Waiting", detailStatus="Restarting")
            self.status.observedRestartGeneration = group.meta.restartGeneration
            self.status.stoppedAt = None
            record_event(self.status.events, "Restarting", "group restart requested")
        self._restart_requested_containers(group, props)
        delay = self._converge_running(group, props)
        if not self._refused:
            self._fenced = False  # every exit of the fence has been seen and its container restarted
        if props.deleteOnExit and self.status.state in ("Succeeded", "Failed") and not self.status.provisioningError:
            # Report the final state first (metering closes the run with it), then go away.
            record_event(self.status.events, "DeleteOnExit", f"group {self.status.state}; deleting it (deleteOnExit)")
            self._report()
            self._release()
            return None
        return delay

    def _release(self, local_only: bool = False) -> None:
        self.host.teardown_group(self.uid)
        if not local_only:
            self.status.released = True
            self.link.release(self.key, self.uid)
        self.host.exits.unsubscribe(self.uid)
        self.finished = True

    def _restart_requested_containers(self, group: GroupRecord, props: GroupProperties) -> None:
        """Single-container restart (Corral extension): stop it here; the converge step starts it again."""
        for c in props.containers:
            want = group.meta.containerRestarts.get(c.name, 0)
            if self.status.observedContainerRestarts.get(c.name, 0) == want:
                continue
            cid, cs = container_id(self.uid, c.name), self.status.containers.setdefault(c.name, ContainerStatus())
            if self.host.container_state(cid).status == "running":
                st = self.host.stop_container(cid, timeout=5)
                cs.previousState = terminated_view(st, cs.currentState.startTime)
                cs.restartCount += 1
            self.host.remove_container(self.uid, cid)
            cs.currentState = ContainerStateView(state="Waiting", detailStatus="Restarting")
            self._backoff.pop(c.name, None), self._started_mono.pop(c.name, None)
            self.status.observedContainerRestarts[c.name] = want
            record_event(cs.events, "Restarting", f"restart of container {c.name} requested")

    def _converge_running(self, group: GroupRecord, props: GroupProperties) -> float | None:
        hostname = group.meta.name
        try:
            subnet_id = props.subnetIds[0].id if props.subnetIds else None
            dns = dns_settings(props, group.meta.resourceGroup, self.host.dns_zone,
                               self.host.nameserver_for(subnet_id))
            sandbox = self.host.ensure_sandbox(self.uid, hostname, props.ipAddress, subnet_id=subnet_id, dns=dns,
                                               sysctls=props.sysctls, warm_image=self._warm_image(props))
        except CorralError as exc:
            self.status.provisioningError = exc.message
            record_event(self.status.events, "NetworkSetupFailed", exc.message, "Warning")
            self.status.state = "Failed" if exc.status == 409 else "Pending"
            return 5.0
        public = props.ipAddress is not None and props.ipAddress.type == "Public"
        self.status.ip = self.host.public_ip if public else sandbox.ip
        self.status.privateIp = sandbox.ip
        if props.hostAliases or self._host_aliases:
            aliases = [(a.ip, a.hostnames) for a in props.hostAliases or []]
            write_hosts(sandbox.hosts, sandbox.ip, hostname, aliases)
            self._host_aliases = bool(aliases)
        self._apply_group_rules(props, subnet_id)

        images = {}
        creds = props.imageRegistryCredentials or []
        every: list[Container | InitContainer] = [*(props.initContainers or []), *props.containers]
        for c in every:
            ref = c.properties.image
            if ref in images:
                continue
            try:
                image = self.host.images.get(ref)
                if image is None:
                    record_event(self.status.events, "Pulling", f"pulling image {ref}")
                    self._report()
                    image = self.host.images.pull(ref, credentials=registry_credentials(creds))
                    record_event(self.status.events, "Pulled", f"pulled image {ref}")
                images[ref] = image
            except CorralError as exc:
                self.status.provisioningError = f"image {ref}: {exc.message}"
                record_event(self.status.events, "Failed", f"failed to pull image {ref}: {exc.message}", "Warning")
                self.status.state = "Pending"
                return 10.0
        if not self.host.allow_privileged:
            contexts = [(c.name, c.properties.securityContext) for c in props.containers]
            contexts += [(c.name, c.properties.securityContext) for c in props.initContainers or []]
            privileged = [name for name, sc in contexts if sc and sc.privileged]
            if privileged:
                msg = (f"container(s) {', '.join(privileged)} ask to run privileged, which node {self.status.node} "
                       "does not allow (start it with `corral up --allow-privileged`)")
                self.status.provisioningError = msg
                record_event(self.status.events, "PrivilegedNotAllowed", msg, "Warning")
                self.status.state = "Failed"
                return None
        if not self._prepare_volumes(props):
            return 5.0
        self.status.provisioningError = None

        # Init containers, in order, each to successful completion.
        for ic in props.initContainers or []:
            cs = self.status.initContainers.setdefault(ic.name, ContainerStatus())
            if cs.currentState.state == "Terminated" and cs.currentState.exitCode == 0:
                continue
            delay = self._step_container(ic, cs, images[ic.properties.image], sandbox, hostname, props, init=True)
            if cs.currentState.state == "Terminated" and cs.currentState.exitCode == 0:
                continue
            self.status.state = "Failed" if self._given_up(cs, props) else "Pending"
            return delay

        if self._unlisted_checked != group.meta.generation:  # listing the runtime's dirs each pass is O(groups)
            self._remove_unlisted(props)
            self._unlisted_checked = group.meta.generation
        delays = []
        for c in props.containers:
            cs = self.status.containers.setdefault(c.name, ContainerStatus())
            delays.append(self._step_container(c, cs, images[c.properties.image], sandbox, hostname, props))
        self._summarize(props)
        pending = [d for d in delays if d is not None]
        return min(pending) if pending else None

    def _warm_image(self, props: GroupProperties) -> str | None:
        """The image of a group that may start in a warm container: one container, nothing to mount,
        no security context, default isolation (the host checks the rest against the spec)."""
        if (len(props.containers) != 1 or props.initContainers or props.volumes
                or isolation_of(props, self.host.isolation) != "default"):
            return None
        p = props.containers[0].properties
        return p.image if p.securityContext is None and not p.volumeMounts else None

    def _prepare_volumes(self, props: GroupProperties) -> bool:
        want = json.dumps([v.model_dump(mode="json") for v in props.volumes or []], sort_keys=True)
        if want == self._volumes_prepared:
            return True
        try:
            self._volume_paths = self.host.prepare_volumes(self.uid, props.volumes)
        except CorralError as exc:
            self.status.provisioningError = f"volumes: {exc.message}"
            record_event(self.status.events, "VolumeSetupFailed", exc.message, "Warning")
            self.status.state = "Pending"
            return False
        self._volumes_prepared = want
        return True

    def _step_container(
        self,
        c: Container | InitContainer,
        cs: ContainerStatus,
        image,  # type: ignore[no-untyped-def]
        sandbox,  # type: ignore[no-untyped-def]
        hostname: str,
        props: GroupProperties,
        init: bool = False,
    ) -> float | None:
        cid = container_id(self.uid, c.name, init)
        st = self.host.container_state(cid)
        now = time.monotonic()
        want = spec_hash(c)
        known = self.status.specHashes.get(cid)
        if st.status != "absent" and known is not None and known != want:
            # The spec of this container changed (PUT update): replace it, leave the others alone.
            self.host.stop_container(cid, timeout=5)
            self.host.remove_container(self.uid, cid)
            record_event(cs.events, "Updating", f"container {c.name} changed; replacing it")
            cs.currentState = ContainerStateView(state="Waiting", detailStatus="Updating")
            self._backoff.pop(c.name, None)
            st = self.host.container_state(cid)
        if st.status == "running":
            if cs.currentState.state != "Running":  # adopted after an agent restart, or just started
                cs.currentState = ContainerStateView(state="Running", startTime=st.started_at or datetime.now(UTC))
            self._started_mono.setdefault(c.name, now)
            if isinstance(c, Container):
                return self._probe(c, cs, cid, sandbox.ip)
            return RUNNING_SWEEP
        if st.status in ("stopped", "created"):
            # It exited: record how, and free its runtime resources (the log stays).
            cs.ready = False if cs.ready is not None else None
            cs.currentState = terminated_view(st, cs.currentState.startTime)
            level = "Normal" if cs.currentState.exitCode == 0 else "Warning"
            msg = f"container exited with code {cs.currentState.exitCode}"
            if st.oom_killed:
                msg = "container was killed for exceeding its memory limit (OOMKilled)"
            if self._fenced:
                cs.currentState.detailStatus = "Fenced"
                record_event(cs.events, "Fenced", f"container stopped: node {self.status.node} lost contact with "
                             "the control plane (self-fencing); it starts again only where the group is bound",
                             "Warning")
            else:
                record_event(cs.events, "Killed" if st.oom_killed else "Terminated", msg, level)
            self.host.remove_container(self.uid, cid)
            ran = now - self._started_mono.pop(c.name, now)
            fails, _ = self._backoff.get(c.name, (0, 0.0))
            if ran >= BACKOFF_RESET_AFTER:
                fails = 0
            wait = min(BACKOFF_MAX, BACKOFF_BASE * (2**fails))
            self._backoff[c.name] = (fails + 1, now + wait)
            if not self._should_restart(cs, props):
                return None
            record_event(cs.events, "BackOff", f"restarting in {wait:.0f}s (restart policy {props.restartPolicy})")
            return wait
        # absent: start it, unless it finished and must not run again
        if cs.currentState.state == "Running":
            # Reported running, yet gone from the host (node reset, reboot): it ended unseen.
            cs.currentState = ContainerStateView(state="Terminated", startTime=cs.currentState.startTime,
                                                 finishTime=datetime.now(UTC), exitCode=-1, detailStatus="Lost")
            record_event(cs.events, "Lost", f"container {c.name} is no longer on node {self.status.node} "
                         "(node reset or reboot); the restart policy decides what follows", "Warning")
        if cs.currentState.state == "Terminated":
            if not self._should_restart(cs, props):
                return None
            _, not_before = self._backoff.get(c.name, (0, 0.0))
            if now < not_before:
                return not_before - now
        try:
            mounts = volume_mounts(c.properties, props.volumes, self._volume_paths)
            with self._may_start() as allowed:
                if not allowed:
                    self._refused = True
                    record_event(self.status.events, "NodeFenced", f"node {self.status.node} is not in contact "
                                 "with the control plane: no container starts until it is", "Warning")
                    return FENCED_RETRY
                self.host.run_container(self.uid, c.name, c.properties, image, sandbox, hostname, init=init,
                                        mounts=mounts, isolation=isolation_of(props, self.host.isolation))
        except CorralError as exc:
            cs.currentState = ContainerStateView(state="Waiting", detailStatus=exc.message)
            record_event(cs.events, "Failed", exc.message, "Warning")
            fails, _ = self._backoff.get(c.name, (0, 0.0))
            wait = min(BACKOFF_MAX, BACKOFF_BASE * (2**fails))
            self._backoff[c.name] = (fails + 1, now + wait)
            return wait
        self.status.specHashes[cid] = want
        if cs.currentState.state == "Terminated":
            cs.previousState = cs.currentState
            cs.restartCount += 1
        cs.currentState = ContainerStateView(state="Running", startTime=datetime.now(UTC))
        self._started_mono[c.name] = now
        record_event(cs.events, "Started", f"started container {c.name} from {c.properties.image}")
        if not isinstance(c, Container):
            return RUNNING_SWEEP  # its exit wakes us
        p = c.properties
        cs.ready = p.readinessProbe is None and p.startupProbe is None
        return RUNNING_SWEEP if not (p.livenessProbe or p.readinessProbe or p.startupProbe) else POLL_INTERVAL

    def _kill_unhealthy(self, c: Container, cs: ContainerStatus, cid: str, kind: str) -> float:
        record_event(cs.events, "Killing", f"container {c.name} failed its {kind} probe and will be "
                     f"restarted (restart policy {self._restart_policy})", "Warning")
        self._prober.reset(c.name, "liveness")
        self._prober.reset(c.name, "startup")
        self.host.stop_container(cid, timeout=5)
        cs.ready = False
        return 0.0  # the next pass sees it exited and applies the restart policy

    def _step(self, name: str, cs: ContainerStatus, kind: ProbeKind, probe: Probe, epoch: str, cid: str,
              ip: str | None) -> ProbeStep:
        """Run one probe if it is due; a failure is an Unhealthy event."""
        step = self._prober.step(name, kind, probe, epoch, cid, ip)
        if step.failure:
            record_event(cs.events, "Unhealthy", f"{kind.capitalize()} probe failed: {step.failure}", "Warning")
        return step

    def _probe(self, c: Container, cs: ContainerStatus, cid: str, ip: str | None) -> float:
        """Run the container's due probes; a failed liveness (or startup) probe kills it (the restart policy
        decides the rest). Until a startup probe has succeeded, the other two wait and the container is not ready."""
        p = c.properties
        epoch = f"{cs.restartCount}:{cs.currentState.startTime}"
        delay = RUNNING_SWEEP
        if p.startupProbe is not None and self._started_ok.get(c.name) != epoch:
            step = self._step(c.name, cs, "startup", p.startupProbe, epoch, cid, ip)
            if step.verdict is False:
                return self._kill_unhealthy(c, cs, cid, "startup")
            if step.verdict is None:
                cs.ready = False
                return step.next_in
            self._started_ok[c.name] = epoch  # succeeded: never probed again in this run of the container
            self._prober.reset(c.name, "startup")
        if p.readinessProbe is None:
            cs.ready = True
        else:
            step = self._step(c.name, cs, "readiness", p.readinessProbe, epoch, cid, ip)
            cs.ready = step.verdict is True
            delay = min(delay, step.next_in)
        if p.livenessProbe is not None:
            step = self._step(c.name, cs, "liveness", p.livenessProbe, epoch, cid, ip)
            if step.verdict is False:
                return self._kill_unhealthy(c, cs, cid, "liveness")
            delay = min(delay, step.next_in)
        return delay

    @staticmethod
    def _should_restart(cs: ContainerStatus, props: GroupProperties) -> bool:
        if cs.currentState.detailStatus in ("Stopped", "Evicted"):
            return False
        if cs.currentState.detailStatus == "Fenced":
            return True  # it did not end by itself: it runs again, as it would on the node it fails over to
        if props.restartPolicy == "Always":
            return True
        if props.restartPolicy == "OnFailure":
            return cs.currentState.exitCode != 0
        return False

    def _given_up(self, cs: ContainerStatus, props: GroupProperties) -> bool:
        return cs.currentState.state == "Terminated" and not self._should_restart(cs, props)

    def _summarize(self, props: GroupProperties) -> None:
        states = [cs.currentState for name, cs in self.status.containers.items()
                  if name in {c.name for c in props.containers}]
        if all(s.state == "Running" for s in states):
            state = "Running"
        elif all(s.state == "Terminated" for s in states) and not any(
            self._should_restart(cs, props) for cs in self.status.containers.values()
        ):
            state = "Succeeded" if all(s.exitCode == 0 for s in states) else "Failed"
        elif any(s.state == "Running" for s in states):
            state = "Running"
        else:
            state = "Pending"
        if state == "Running" and self.status.startedAt is None:
            self.status.startedAt = datetime.now(UTC)
        if state == "Running":
            self.status.stoppedAt = None  # running again (e.g. on the node it failed over to)
        if state in ("Succeeded", "Failed") and self.status.stoppedAt is None:
            self.status.stoppedAt = datetime.now(UTC)
        if state != self.status.state:
            record_event(self.status.events, state, f"group is {state}")
        self.status.state = state  # type: ignore[assignment]

    def _remove_unlisted(self, props: GroupProperties) -> None:
        """Containers no longer in the spec (removed by an update) go away."""
        wanted = {container_id(self.uid, c.name) for c in props.containers}
        wanted |= {container_id(self.uid, c.name, True) for c in props.initContainers or []}
        for cid in self.host.containers_of(self.uid):
            if cid not in wanted:
                self.host.stop_container(cid, timeout=5)
                self.host.remove_container(self.uid, cid)
                self.status.specHashes.pop(cid, None)
        names = {c.name for c in props.containers}
        for name in [n for n in self.status.containers if n not in names]:
            del self.status.containers[name]
        self._prober.forget(names)

    def _stop_all(self, props: GroupProperties, reason: str) -> None:
        every: list[Container | InitContainer] = [*props.containers, *(props.initContainers or [])]
        for c in every:
            init = not isinstance(c, Container)
            cid = container_id(self.uid, c.name, init)
            st = self.host.container_state(cid)
            if st.status == "absent":
                continue
            if st.status == "running":
                st = self.host.stop_container(cid)
            table = self.status.initContainers if init else self.status.containers
            cs = table.setdefault(c.name, ContainerStatus())
            view = terminated_view(st, cs.currentState.startTime)
            view.detailStatus = reason
            cs.currentState = view
            self._started_mono.pop(c.name, None)
            self.host.remove_container(self.uid, cid)
        # Containers removed from the spec, or left from an older generation.
        for cid in self.host.containers_of(self.uid):
            self.host.stop_container(cid, timeout=5)
            self.host.remove_container(self.uid, cid)
