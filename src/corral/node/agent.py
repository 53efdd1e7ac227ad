"""The node agent: follows the groups bound to this node and keeps one worker per group.

It holds no state of its own that matters: assignments come from the control
plane, containers and sandboxes are found on disk. Killing it leaves every
container running (conmon supervises them); a new agent adopts them, and
removes what belongs to groups deleted while it was away.

A remote agent (``lease`` given) holds its groups under a heartbeat lease
(``corral.node.lease``): when the lease lapses it kills its containers, and when
it is back it lists its assignments afresh before anything starts again,
removing the copies of groups the control plane moved elsewhere meanwhile.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime

from corral.errors import CorralError
from corral.link.protocol import LB_PREFIXES, NETWORK_PREFIXES, ControlPlaneLink
from corral.model.records import GROUPS, GroupRecord, NodeInfo
from corral.node import fence
from corral.node.host import NodeHost
from corral.node.lease import NodeLease
from corral.node.loadbalancer import LoadBalancerRules
from corral.node.stats import SAMPLE_INTERVAL, MetricsReporter, UsageSampler
from corral.node.worker import GroupWorker

log = logging.getLogger(__name__)


class NodeAgent:
    def __init__(self, link: ControlPlaneLink, host: NodeHost, info: NodeInfo, lease: NodeLease | None = None,
                 wait_timeout: float = 1.0, metrics_interval: float = SAMPLE_INTERVAL,
                 lb: LoadBalancerRules | None = None) -> None:
        self.link = link
        self.host = host
        self.info = info
        self.lease = lease
        self.lb = lb
        self._lb_dirty = lb is not None
        self.wait_timeout = wait_timeout
        self.metrics = MetricsReporter(UsageSampler(host, info.name), link, metrics_interval)
        self.workers: dict[str, GroupWorker] = {}
        self._lock = threading.Lock()  # the workers table
        # One sync at a time (a re-list, or dispatching what a wait returned); ``_gen`` moves with
        # each re-list and lapse, so a wait's answer older than either is dropped, not applied.
        self._sync = threading.RLock()
        self._gen = 0
        self._rev: int | None = None
        self._first_sync = True
        self._fenced_at_start = lease is not None and fence.took_fence(lease.state_dir)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent", daemon=True)

    @property
    def _session(self) -> int:
        return self.lease.session if self.lease is not None else 0

    def start(self) -> None:
        self.host.warm.start()  # first: it settles warm containers a previous agent bound, before workers look
        if self.lease is None:  # in the server's process: the link is always there
            self._register()
            self._resync(0)
        else:
            self.lease.start(on_lapse=self._fence, on_regain=self._regained)
        self._thread.start()
        self.metrics.start()

    def stop(self) -> None:
        """Stop reconciling; containers keep running (a remote agent's watchdog fences them once its lease lapses)."""
        self._stop.set()
        if self.lease is not None:
            self.lease.stop()
        self._thread.join(timeout=5)
        self.metrics.stop()
        if self.lb is not None:
            self.lb.stop()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.stop()
        self.host.warm.stop()

    def _register(self) -> None:
        self.info.lastHeartbeat = datetime.now(UTC)
        self.link.register(self.info)

    # sessions (remote agents) -------------------------------------------------
    def _regained(self, session: int) -> None:
        """A heartbeat was acknowledged after none (start) or a lapse: list the assignments, then let
        containers start."""
        try:
            self._register()
            self._resync(session)
        except Exception as exc:
            log.warning("could not list this node's assignments (%s); trying again", exc)
            self.lease.resync_failed(session)  # type: ignore[union-attr]
            return
        if self.lease.confirm(session):  # type: ignore[union-attr]
            if self._fenced_at_start:
                fence.clear_fence_marker(self.lease.state_dir)  # type: ignore[union-attr]
                self._fenced_at_start = False

    def _fence(self) -> None:
        """The lease lapsed: kill this node's containers now (the watchdog would, a moment later)."""
        self._gen += 1  # no lock: a sync may be stuck on the unreachable control plane, the kill cannot wait
        killed = fence.kill_tree(self.host.cgroup_parent)
        # gVisor sandboxes run outside the cgroups (--ignore-cgroups): the cgroup kill misses them.
        for cid in self.host.runtime.list_ids():
            if self.host.runtime.runtime_of(cid) == "runsc":
                try:
                    self.host.runtime_for("sandboxed").kill(cid, signal.SIGKILL)
                    killed += 1
                except CorralError as exc:
                    log.warning("could not kill sandboxed container %s: %s", cid, exc.message)
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.fence()
        log.warning("self-fenced: %d process(es) of %d group(s) killed", killed, len(workers))

    def _resync(self, session: int) -> None:
        """List the assignments and converge the workers on them: new ones start, gone ones are relinquished."""
        with self._sync:
            rev, assigned = self.link.assignments(self.info.name)
            if self._first_sync:
                self._collect_orphans({g.meta.uid for g in assigned.values()})
                self._first_sync = False
            for key, group in assigned.items():  # first: a group that moved to a new name takes its worker along
                self._dispatch(key, group, session)
            with self._lock:
                lost = [k for k in self.workers if k not in assigned]
            for key in lost:
                self._relinquish(key)
            self._rev = rev
            self._gen += 1
            self._lb_dirty = self.lb is not None

    # following the assignments ---------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._sync:
                    gen, rev, session = self._gen, self._rev, self._session
                if rev is None:  # a remote agent before its first session
                    self._stop.wait(0.1)
                    continue
                new_rev, changed = self.link.wait(self.info.name, rev, timeout=self.wait_timeout)
                with self._sync:
                    if gen != self._gen:
                        continue  # a re-list or a lapse came in between: this answer may be stale
                    if changed is None:  # history lost: re-list everything
                        self._resync(session)
                        continue
                    if any(k.startswith(NETWORK_PREFIXES) for k in changed):
                        self._refresh_networks()
                    if self.lb is not None and any(k.startswith(LB_PREFIXES) for k in changed):
                        self._lb_dirty = True
                    self._follow_all(sorted(k for k in changed if k.startswith(GROUPS)), session)
                    self._rev = new_rev
                if self._lb_dirty:
                    self._refresh_lbs()
                self._reap()
            except Exception as exc:
                level = logging.WARNING if isinstance(exc, CorralError) else logging.ERROR
                log.log(level, "agent loop failed; retrying: %s", exc, exc_info=not isinstance(exc, CorralError))
                self._stop.wait(1.0)

    def _follow_all(self, keys: list[str], session: int) -> None:
        """Groups bound here start or change first, then the others go: a group taken over from a standby
        pool appears under its new name in the same change as its old name goes, and keeps its worker."""
        found = {key: self.link.assignment(self.info.name, key) for key in keys}
        for key, group in found.items():
            if group is not None:
                self._dispatch(key, group, session)
        for key, group in found.items():
            if group is None:
                self._relinquish(key)

    def recheck(self, key: str) -> None:
        """A worker's report was refused: look at its assignment again (from the worker's thread)."""
        def check() -> None:
            try:
                with self._sync:
                    self._follow_all([key], self._session)
            except CorralError as exc:
                log.info("could not re-check %s: %s", key, exc.message)
        threading.Thread(target=check, name="agent-recheck", daemon=True).start()

    def _refresh_networks(self) -> None:
        """Security rules or peers changed: apply them to this node's networks, live."""
        try:
            self.host.network.refresh()
        except Exception:
            log.exception("could not refresh this node's virtual networks")
        with self._lock:
            workers = [w for w in self.workers.values() if w.has_own_security_group()]
        for w in workers:  # groups with their own security group re-read it
            w.poke()

    def _refresh_lbs(self) -> None:
        """Apply the load balancers' rules as the control plane has them now; retried next pass on failure."""
        if self.lb is None:
            return
        try:
            rules = self.link.load_balancer_rules(self.info.name)
            self.lb.apply(rules)
            self.link.report_load_balancers(self.info.name, rules.revision)
            self._lb_dirty = False
        except Exception as exc:
            log.warning("could not apply the load balancers' rules on this node (%s); retrying", exc)

    def _dispatch(self, key: str, group: GroupRecord, session: int) -> None:
        with self._lock:
            worker = self.workers.get(key)
            if worker is None:
                # Taken over from a standby pool: the same group (uid, binding) under a new name. Its worker
                # follows the new key; nothing is torn down or started again.
                moved = next((k for k, w in self.workers.items() if w.uid == group.meta.uid and not w.finished
                              and w.epoch == group.meta.epoch), None)
                if moved is not None:
                    worker = self.workers.pop(moved)
                    worker.key = key
                    self.workers[key] = worker
        if worker is not None and worker.uid == group.meta.uid and worker.epoch != group.meta.epoch:
            # The group left this node and came back: the old copy goes before the new binding starts.
            worker.relinquish()
            worker.join(30)
            worker = None
        with self._lock:
            if worker is not None and worker.uid != group.meta.uid:
                worker.update(None)  # same name, new group: the old one is gone
                worker = None
            if worker is None or worker.finished:
                worker = GroupWorker(key, group, self.link, self.host, lease=self.lease, session=session,
                                     on_lost=self.recheck, fenced=self._fenced_at_start)
                self.workers[key] = worker
                worker.start()
            else:
                worker.update(group, session)

    def _relinquish(self, key: str) -> None:
        with self._lock:
            worker = self.workers.get(key)
        if worker is not None and not worker.finished:
            log.info("group %s is no longer bound to this node: removing its copy here", worker.uid)
            worker.relinquish()

    def _reap(self) -> None:
        with self._lock:
            for key in [k for k, w in self.workers.items() if w.finished]:
                del self.workers[key]

    def _collect_orphans(self, known: set[str]) -> None:
        """Remove containers and sandboxes of groups no longer assigned here."""
        for uid in self.host.group_uids_on_disk() - known:
            log.info("removing leftovers of group %s, no longer assigned to this node", uid)
            self.host.teardown_group(uid)
