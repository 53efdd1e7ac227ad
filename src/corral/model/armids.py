"""ARM resource ids and store keys of the orchestration resources (profiles, NGroups, load balancers, pools).

An id is ``/subscriptions/{sub}/resourceGroups/{rg}/providers/{type}/{name}``; ARM
compares ids case-insensitively, so keys are lowercase and records keep the
creator's spelling.
"""

from __future__ import annotations

import re
from typing import NamedTuple

PROFILE_TYPE = "Microsoft.ContainerInstance/containerGroupProfiles"
NGROUP_TYPE = "Microsoft.ContainerInstance/ngroups"
LB_TYPE = "Microsoft.Network/loadBalancers"
POOL_TYPE = "Microsoft.StandbyPool/standbyContainerGroupPools"

PROFILES = "/profiles/"
PROFILE_REVISIONS = "/profilerevs/"
NGROUPS = "/ngroups/"
NGROUP_OPERATIONS = "/ngroupops/"
LOAD_BALANCERS = "/loadbalancers/"
LB_SYNC = "/lbsync/"  # per node: the store revision of the load-balancer rules its agent applied
STANDBY_POOLS = "/standbypools/"

# Tags the orchestrator puts on the container groups it owns (ordinary groups, made through the API).
NGROUP_TAG = "corral-ngroup"
NGROUP_UID_TAG = "corral-ngroup-uid"  # the NGroup's uid: a member of an NGroup deleted and made again differs
POOL_TAG = "corral-standby-pool"


class ResourceRef(NamedTuple):
    subscription: str
    resource_group: str
    name: str

    def key(self, prefix: str) -> str:
        return resource_key(prefix, *self)


def resource_key(prefix: str, sub: str, rg: str, name: str) -> str:
    return f"{prefix}{sub.lower()}/{rg.lower()}/{name.lower()}"


def resource_id(sub: str, rg: str, rtype: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{rtype}/{name}"


def id_pattern(rtype: str, child: str | None = None) -> re.Pattern[str]:
    """A resource id of ``rtype`` (or of its ``child`` type), case-insensitive: sub, rg, name(, child name)."""
    tail = rf"/{re.escape(child)}/([^/]+)" if child else ""
    return re.compile(rf"^/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/{re.escape(rtype)}/([^/]+){tail}/?$",
                      re.IGNORECASE)


def parse_resource_id(value: str, rtype: str) -> ResourceRef:
    """``value`` as a resource of ``rtype``; ValueError naming the expected shape otherwise."""
    m = id_pattern(rtype).match((value or "").strip())
    if not m:
        raise ValueError(f"'{value}' is not a {rtype} id: expected /subscriptions/{{sub}}/resourceGroups/{{rg}}/"
                         f"providers/{rtype}/{{name}}")
    return ResourceRef(*m.groups())


def parse_child_id(value: str, rtype: str, child: str) -> tuple[ResourceRef, str]:
    """A child resource id (``.../{rtype}/{name}/{child}/{childName}``): the parent and the child's name."""
    m = id_pattern(rtype, child).match((value or "").strip())
    if not m:
        raise ValueError(f"'{value}' is not a {rtype}/{child} id: expected /subscriptions/{{sub}}/resourceGroups/"
                         f"{{rg}}/providers/{rtype}/{{name}}/{child}/{{{child[:-1]}Name}}")
    sub, rg, name, kid = m.groups()
    return ResourceRef(sub, rg, name), kid


def same_id(a: str | None, b: str | None) -> bool:
    return (a or "").strip().rstrip("/").lower() == (b or "").strip().rstrip("/").lower()
