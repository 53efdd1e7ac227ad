"""The node agent: follows the groups bound to this node and keeps one worker per group.

It holds no state of its own that matters: assignments come from the control
plane, containers and sandboxes are found on disk. Killing it leaves every
container running (conmon supervises them); a new agent adopts them, and
removes what belongs to groups deleted while it was away.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from corral.link.protocol import NETWORK_PREFIXES, ControlPlaneLink
from corral.model.records import GROUPS, NodeInfo
from corral.node.host import NodeHost
from corral.node.stats import SAMPLE_INTERVAL, MetricsReporter, UsageSampler
from corral.node.worker import GroupWorker

log = logging.getLogger(__name__)


class NodeAgent:
    def __init__(self, link: ControlPlaneLink, host: NodeHost, info: NodeInfo,
                 metrics_interval: float = SAMPLE_INTERVAL) -> None:
        self.link = link
        self.host = host
        self.info = info
        self.metrics = MetricsReporter(UsageSampler(host, info.name), link, metrics_interval)
        self.workers: dict[str, GroupWorker] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent", daemon=True)

    def start(self) -> None:
        self.info.lastHeartbeat = datetime.now(UTC)
        self.link.register(self.info)
        rev, assigned = self.link.assignments(self.info.name)
        self._collect_orphans({g.meta.uid for g in assigned.values()})
        for key, group in assigned.items():
            self._dispatch(key, group)
        self._rev = rev
        self._thread.start()
        self.metrics.start()

    def stop(self) -> None:
        """Stop reconciling; containers keep running."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.metrics.stop()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rev, changed = self.link.wait(self.info.name, self._rev, timeout=1.0)
                if changed is None:  # history lost: re-list everything
                    rev, assigned = self.link.assignments(self.info.name)
                    for key, group in assigned.items():
                        self._dispatch(key, group)
                else:
                    if any(k.startswith(NETWORK_PREFIXES) for k in changed):
                        self._refresh_networks()
                    for key in changed:
                        if not key.startswith(GROUPS):
                            continue
                        group = self.link.assignment(self.info.name, key)
                        if group is not None:
                            self._dispatch(key, group)
                self._rev = rev
                self._reap()
            except Exception:
                log.exception("agent loop failed; retrying")
                self._stop.wait(1.0)

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

    def _dispatch(self, key: str, group) -> None:  # type: ignore[no-untyped-def]
        with self._lock:
            worker = self.workers.get(key)
            if worker is not None and worker.uid != group.meta.uid:
                worker.update(None)  # same name, new group: the old one is gone
                worker = None
            if worker is None or worker.finished:
                worker = GroupWorker(key, group, self.link, self.host)
                self.workers[key] = worker
                worker.start()
            else:
                worker.update(group)

    def _reap(self) -> None:
        with self._lock:
            for key in [k for k, w in self.workers.items() if w.finished]:
                del self.workers[key]

    def _collect_orphans(self, known: set[str]) -> None:
        """Remove containers and sandboxes of groups no longer assigned here."""
        for uid in self.host.group_uids_on_disk() - known:
            log.info("removing leftovers of group %s, no longer assigned to this node", uid)
            self.host.teardown_group(uid)
