"""The orchestrator's loop: level-triggered passes over every NGroup and standby pool, woken by events.

Where it runs: in ``corral up``, in-process, once the API serves (it talks HTTPS to
the local API with the installation's client config); on a cluster, on the leader
``corral server`` only (``start`` when elected, ``stop`` when demoted), talking to
its local API. It keeps nothing that matters in memory: everything it needs is in
the NGroups, their members' tags and the status it reported, so a new orchestrator
(after a restart or a leader change) carries on where the last one stopped.

A pass runs at least every second, and at once when a container group of a watched
resource group changes (the group event stream, ``GET .../events``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx

from corral.cli.client import ApiError
from corral.config import ClientConfig
from corral.model.armids import NGROUP_TAG
from corral.orchestrator.api import OrchestratorApi
from corral.orchestrator.lbsync import PoolSync
from corral.orchestrator.ngroup import NGroupReconciler
from corral.orchestrator.standby import StandbyPools

log = logging.getLogger(__name__)

RESYNC = 1.0  # seconds between passes when nothing wakes the orchestrator sooner
DEBOUNCE = 0.02  # a burst of events makes one pass


class Orchestrator:
    def __init__(self, config: ClientConfig) -> None:
        self.api = OrchestratorApi(config)
        self.pools = PoolSync(self.api)
        self.ngroups = NGroupReconciler(self.api, self.pools)
        self.standby = StandbyPools(self.api)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._watchers: dict[str, threading.Thread] = {}
        self._thread = threading.Thread(target=self._run, name="orchestrator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def leave(self) -> None:
        """Stop at once without waiting (safe in a signal handler): no new pass, event streams closed."""
        self._stop.set()
        self._wake.set()
        self.api.close()

    def stop(self) -> None:
        self.leave()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                delay = self.run_once()
            except httpx.TransportError as exc:  # the API is not up yet, or restarts
                log.info("orchestrator: the API does not answer (%s); trying again", exc)
                delay = RESYNC
            except Exception:  # a pass failed: the next pass starts from what is
                log.exception("orchestrator pass failed")
                delay = RESYNC
            self._wake.wait(delay)
            if self._wake.is_set():
                self._stop.wait(DEBOUNCE)
                self._wake.clear()

    def run_once(self) -> float:
        """One pass over everything; seconds until the next one is due."""
        ngroups = self.api.ngroups()
        pools = self.api.standby_pools()
        self._watch({r["id"].split("/")[4].lower() for r in [*ngroups, *pools]})
        groups = self.api.groups()
        self.pools.begin_pass()
        delay = RESYNC
        for ng in ngroups:
            try:
                delay = min(delay, self.ngroups.reconcile(ng, groups))
            except ApiError as exc:
                log.warning("NGroup %s: %s", ng.get("name"), exc.message)
        self.ngroups.forget({ng["properties"].get("resourceGuid") for ng in ngroups})
        self.standby.reconcile(pools, groups)
        self._collect_orphans(ngroups, groups)
        return delay

    def _collect_orphans(self, ngroups: list[dict[str, Any]], groups: list[dict[str, Any]]) -> None:
        """Members of NGroups that are gone (deleted while no orchestrator ran, or never released)."""
        known = {ng["id"].lower() for ng in ngroups}
        for g in groups:
            owner = (g.get("tags") or {}).get(NGROUP_TAG)
            if owner and owner.lower() not in known and g["properties"].get("provisioningState") != "Deleting":
                log.info("deleting %s: its NGroup %s is gone", g["name"], owner)
                try:
                    self.api.delete_group(g["id"].split("/")[4], g["name"])
                except ApiError as exc:
                    log.warning("could not delete orphan %s: %s", g["name"], exc.message)

    def _watch(self, resource_groups: set[str]) -> None:
        for rg in resource_groups - set(self._watchers):
            t = threading.Thread(target=self.api.watch_resource_group, args=(rg, self.wake, self._stop),
                                 name=f"orchestrator-watch-{rg}", daemon=True)
            self._watchers[rg] = t
            t.start()


class OrchestratorTask:
    """The orchestrator as a task of the control plane's leader (``ControlPlane.leader_tasks``): started
    when the server is elected, stopped when it is demoted or stops, talking to ``config()``'s API."""

    def __init__(self, config: Callable[[], ClientConfig]) -> None:
        self._config = config
        self._lock = threading.Lock()
        self.orchestrator: Orchestrator | None = None

    def start(self) -> None:
        with self._lock:
            if self.orchestrator is None:
                self.orchestrator = Orchestrator(self._config())
                self.orchestrator.start()

    def stop(self) -> None:
        with self._lock:
            orchestrator, self.orchestrator = self.orchestrator, None
        if orchestrator is not None:
            orchestrator.stop()

    def leave_with(self, should_exit: Callable[[], bool]) -> None:
        """Close the orchestrator's connections as soon as ``should_exit()`` (the API server is stopping), so
        its event streams do not hold the server's graceful shutdown up."""
        def watch() -> None:
            while not should_exit():
                threading.Event().wait(0.1)
            orchestrator = self.orchestrator
            if orchestrator is not None:
                orchestrator.leave()
        threading.Thread(target=watch, name="orchestrator-exit", daemon=True).start()
