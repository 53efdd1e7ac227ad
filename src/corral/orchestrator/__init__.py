"""The orchestrator: NGroups, rollouts, autoscale, load-balancer pools, standby pools; an API client only."""
