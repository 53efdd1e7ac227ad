"""The control plane: the store, the services the API calls, and the controllers."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from corral.control.binder import Binder
from corral.control.controller import Controller
from corral.control.credentials import NodeCredentials
from corral.control.drainplan import DrainPlanner
from corral.control.groups import GroupService
from corral.control.leader import Leadership, SoleLeadership
from corral.control.lifecycle import NodeLifecycle
from corral.control.metering import Meter, PriceSheet
from corral.control.metrics.history import MetricsHistory
from corral.control.metrics.rollups import MetricsCompactor
from corral.control.netplane import NetworkControl
from corral.control.nodeadmin import NodeService
from corral.control.nodes import NodeDirectory
from corral.control.orchestration import OrchestrationControl
from corral.control.placementcheck import GroupPlacementCheck
from corral.link.local import LocalLink
from corral.model.network import NetworkSettings
from corral.scheduler.pipeline import SchedulerSettings
from corral.serving import side_by_side
from corral.store.base import Store


class LeaderTask(Protocol):
    def start(self) -> None: ...

    def stop(self) -> None:
        """Idempotent: a demotion and a stop may both call it."""
        ...


class Quota(BaseModel):
    groups: int = 16000
    cores: int = 1000


class ControlPlane:
    scrape_token: str | None = None  # a bearer token good for GET /metrics only (set by the server)

    def __init__(self, store: Store, token: str, location: str = "local", dns_zone: str = "corral.local",
                 price_sheet: Path | None = None, network: NetworkSettings | None = None,
                 scheduler: SchedulerSettings | None = None, leadership: Leadership | None = None) -> None:
        self.store = store
        self.token = token
        self.location = location
        self.dns_zone = dns_zone
        self.quota = Quota()
        self.groups = GroupService(store, default_location=location)
        self.nodes = NodeDirectory(store)
        self.link = LocalLink(store)
        self.metering = Meter(store, PriceSheet.load(price_sheet))
        self.network = NetworkControl(store, network, location=location)
        subnet = self.network.vnets.default_subnet_id()
        self.binder = Binder(store, scheduler, self.network.settings, subnet)
        self.lifecycle = NodeLifecycle(store, DrainPlanner(store, scheduler, self.network.settings, subnet,
                                                           follows=True))
        self.groups.placement_check = GroupPlacementCheck(store).check
        self.node_admin = NodeService(store, self.network, DrainPlanner(store, scheduler, self.network.settings,
                                                                        subnet))
        # Remote agents may join (set by `corral server`); None: only the in-process node of `corral up`.
        self.credentials: NodeCredentials | None = None
        # Every server serves the API; the controllers run on the leader only.
        self.leadership = leadership or SoleLeadership()
        self.groups.network_check = self.network.check_group
        self.link.network = self.network
        # Usage metrics: every server keeps what its agents send; the compactor runs with the controllers.
        self.metrics = MetricsHistory(store)
        self.link.metrics = self.metrics
        self.metrics_compactor = MetricsCompactor(store)
        self.orchestration = OrchestrationControl(store, self.groups, self.network, location=location)
        self.link.loadbalancers = self.orchestration.loadbalancers
        # More work for the leader only, beside the controllers (the server adds the orchestrator).
        self.leader_tasks: list[LeaderTask] = []
        self.network.start()

    @property
    def controllers(self) -> list[Controller | LeaderTask]:
        return [self.binder, self.metering, self.lifecycle, self.metrics_compactor, *self.leader_tasks]

    def start(self) -> None:
        self.leadership.start(on_elected=self._elected, on_demoted=self._demoted)

    def _elected(self) -> None:
        for c in self.controllers:
            c.start()

    def _demoted(self) -> None:
        side_by_side(*(c.stop for c in self.controllers))

    def stop(self) -> None:
        self.leadership.stop()
        self._demoted()  # stopping twice is harmless
        self.metrics.stop()
