"""ARM paths are case-insensitive and clients send doubled slashes: canonicalize before routing."""

from __future__ import annotations

import re
from functools import lru_cache

# Literal path segments of the routes, by their lowercase spelling.
LITERALS = {
    s.lower(): s
    for s in (
        "subscriptions", "resourceGroups", "providers", "Microsoft.ContainerInstance", "containerGroups",
        "containers", "logs", "exec", "attach", "restart", "stop", "start", "locations", "operations",
        "usages", "capabilities", "cachedImages", "metadata", "endpoints", "identity", "oauth2", "token",
        "Microsoft.Network", "virtualNetworks", "subnets", "networkSecurityGroups", "securityRules",
        "operationResults", "execSync", "virtualNetworkPeerings", "routeTables", "routes",
        "events",
        "Microsoft.Insights", "metrics", "metricDefinitions",
        # orchestration resources
        "containerGroupProfiles", "revisions", "ngroups", "status", "loadBalancers", "backendAddressPools",
        "frontendIPConfigurations", "loadBalancingRules", "probes", "Microsoft.StandbyPool",
        "standbyContainerGroupPools", "runtimeViews", "Microsoft.Resources", "deployments", "resources",
    )
}
_SLASHES = re.compile(r"/{2,}")


@lru_cache(maxsize=4096)  # clients repeat their paths; the split and join cost more than the lookup
def canonical_path(path: str) -> str:
    path = _SLASHES.sub("/", path)
    parts = path.split("/")
    return "/".join(LITERALS.get(p.lower(), p) for p in parts)
