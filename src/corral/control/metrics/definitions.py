"""The metrics of a container group, as Azure Monitor names them for ACI, and how a node's sample feeds them.

CPU and memory are per container (dimension ``containerName``); the whole group's value at a sample is the
sum over its containers. Network rates are the group's (its containers share one network namespace).

An NGroup's metrics are the same, over its members' samples, with one more dimension, ``containerGroupName``
(the member), as Azure gives multi-instance resources (VM scale sets: ``VMName``) an instance dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from corral.model.metrics import GroupSample

NAMESPACE = "Microsoft.ContainerInstance/containerGroups"
NGROUP_NAMESPACE = "Microsoft.ContainerInstance/ngroups"
CONTAINER_NAME = "containerName"
MEMBER_NAME = "containerGroupName"  # an NGroup's member
GROUP = ""  # the dimension value under which the whole group's aggregate is kept


@dataclass(frozen=True)
class MetricDefinition:
    name: str
    display: str
    description: str
    unit: str
    dimensions: tuple[str, ...]
    primary: str = "Average"


CPU_USAGE = MetricDefinition("CpuUsage", "CPU Usage", "CPU usage on all cores in millicores.", "Count",
                             (CONTAINER_NAME,))
MEMORY_USAGE = MetricDefinition("MemoryUsage", "Memory Usage", "Total memory usage in bytes.", "Bytes",
                                (CONTAINER_NAME,))
NETWORK_IN = MetricDefinition("NetworkBytesReceivedPerSecond", "Network Bytes Received Per Second",
                              "The network bytes received per second.", "Bytes", ())
NETWORK_OUT = MetricDefinition("NetworkBytesTransmittedPerSecond", "Network Bytes Transmitted Per Second",
                               "The network bytes transmitted per second.", "Bytes", ())

DEFINITIONS = (CPU_USAGE, MEMORY_USAGE, NETWORK_IN, NETWORK_OUT)
NGROUP_DEFINITIONS = tuple(replace(d, dimensions=(MEMBER_NAME, *d.dimensions)) for d in DEFINITIONS)


def sample_values(sample: GroupSample) -> dict[str, dict[str, float]]:
    """metric name -> dimension value -> the sample's value (GROUP: the whole group)."""
    out: dict[str, dict[str, float]] = {}
    if sample.containers:
        cpu = {name: c.cpu * 1000.0 for name, c in sample.containers.items()}  # cores -> millicores
        mem = {name: float(c.memoryBytes) for name, c in sample.containers.items()}
        out[CPU_USAGE.name] = {**cpu, GROUP: sum(cpu.values())}
        out[MEMORY_USAGE.name] = {**mem, GROUP: sum(mem.values())}
    if sample.rxBytesPerSecond is not None:
        out[NETWORK_IN.name] = {GROUP: sample.rxBytesPerSecond}
    if sample.txBytesPerSecond is not None:
        out[NETWORK_OUT.name] = {GROUP: sample.txBytesPerSecond}
    return out
