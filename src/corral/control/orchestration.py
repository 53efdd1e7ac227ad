"""The orchestration resources of the control plane in one object: profiles, NGroups, load balancers, pools.

Desired state only: the orchestrator (``corral.orchestrator``, an API client) does the work, and the
node agents apply the load balancers' rules.
"""

from __future__ import annotations

from corral.control.groups import GroupService
from corral.control.loadbalancers import LoadBalancerService
from corral.control.netplane import NetworkControl
from corral.control.ngroups import NGroupService
from corral.control.profiles import ProfileService
from corral.control.standbypools import StandbyPoolService
from corral.store.base import Store


class OrchestrationControl:
    def __init__(self, store: Store, groups: GroupService, network: NetworkControl, location: str = "local") -> None:
        self.profiles = ProfileService(store, default_location=location)
        self.ngroups = NGroupService(store, self.profiles, default_location=location)
        self.loadbalancers = LoadBalancerService(store, network, default_location=location)
        self.standby_pools = StandbyPoolService(store, groups, self.profiles, default_location=location)
        groups.standby_claim = self.standby_pools.claim
