"""Autoscale: reading the Azure Monitor metrics shape, and the HPA-like rule with the scale-down delay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from corral.model.ngroup import Autoscale, AutoscaleStatus
from corral.orchestrator.autoscale import Autoscaler, Usage, average, latest, usage_of, wanted

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def metrics(cpu_millicores: list[float], memory_bytes: float | None = None) -> dict[str, object]:
    """The body of GET {group id}/providers/Microsoft.Insights/metrics, one series per container."""
    def series(values: list[float | None], container: str) -> dict[str, object]:
        return {"metadatavalues": [{"name": {"value": "containerName"}, "value": container}],
                "data": [{"timeStamp": f"2026-01-01T00:0{i}:00Z", "average": v} for i, v in enumerate(values)]}
    value: list[dict[str, object]] = [{"name": {"value": "CpuUsage", "localizedValue": "CPU Usage"}, "unit": "Count",
                                       "timeseries": [series([1.0, c], f"c{i}") for i, c in enumerate(cpu_millicores)]}]
    if memory_bytes is not None:
        value.append({"name": {"value": "MemoryUsage"}, "unit": "Bytes",
                      "timeseries": [series([memory_bytes, None], "c0")]})
    return {"value": value, "timespan": "2026-01-01T00:00:00Z/2026-01-01T00:02:00Z", "interval": "PT1M"}


GROUP = {"properties": {"containers": [
    {"name": "c0", "properties": {"resources": {"requests": {"cpu": 0.5, "memoryInGB": 1.0}}}},
    {"name": "c1", "properties": {"resources": {"requests": {"cpu": 0.5, "memoryInGB": 1.0}}}}]}}


def test_latest_sums_each_series_latest_average() -> None:
    body = metrics([200.0, 100.0], memory_bytes=2 ** 30)
    assert latest(body, "CpuUsage") == 300.0
    assert latest(body, "cpuusage") == 300.0
    assert latest(body, "MemoryUsage") == 2 ** 30  # the last point with a value
    assert latest(body, "NetworkBytesReceivedPerSecond") is None
    assert latest({"value": []}, "CpuUsage") is None


def test_usage_is_relative_to_what_the_group_requests() -> None:
    u = usage_of(GROUP, metrics([500.0, 250.0], memory_bytes=2 ** 30))
    assert u.cpu_percent == 75.0 and u.memory_percent == 50.0
    avg = average([Usage(80, None), Usage(40, 10), Usage(None, None)])
    assert avg.cpu_percent == 60 and avg.memory_percent == 10


def test_wanted_follows_the_ratio_within_bounds_and_ignores_small_deviations() -> None:
    spec = Autoscale(minCount=1, maxCount=6, targetCpuUtilizationPercent=50)
    assert wanted(spec, 2, Usage(cpu_percent=100)) == 4
    assert wanted(spec, 2, Usage(cpu_percent=54)) == 2  # within 10 % of the target
    assert wanted(spec, 4, Usage(cpu_percent=10)) == 1
    assert wanted(spec, 4, Usage(cpu_percent=400)) == 6
    assert wanted(spec, 2, Usage()) is None
    both = Autoscale(minCount=1, maxCount=10, targetCpuUtilizationPercent=50, targetMemoryUtilizationPercent=50)
    assert wanted(both, 2, Usage(cpu_percent=10, memory_percent=150)) == 6  # the larger need wins


def test_scales_up_at_once_and_down_only_after_the_delay_to_the_most_wanted_in_the_window() -> None:
    spec = Autoscale(minCount=1, maxCount=5, targetCpuUtilizationPercent=50, scaleDownDelay="PT30S")
    a = Autoscaler()
    st = a.decide(spec, AutoscaleStatus(desiredCount=1), Usage(cpu_percent=200), T0)
    assert st.desiredCount == 4 and st.lastScaleTime == T0
    st = a.decide(spec, st, Usage(cpu_percent=12.5), T0 + timedelta(seconds=5))  # wants 1
    assert st.desiredCount == 4 and st.belowSince == T0 + timedelta(seconds=5)
    st = a.decide(spec, st, Usage(cpu_percent=25), T0 + timedelta(seconds=20))  # wants 2
    assert st.desiredCount == 4 and "scaling down after 30 s" in st.message
    st = a.decide(spec, st, Usage(cpu_percent=12.5), T0 + timedelta(seconds=36))
    assert st.desiredCount == 2  # the most the last 30 s wanted (the reading at 20 s asked for 2)
    st = a.decide(spec, st, Usage(cpu_percent=50), T0 + timedelta(seconds=40))
    assert st.desiredCount == 2 and st.belowSince is None


def test_a_scale_up_delay_is_kept() -> None:
    spec = Autoscale(minCount=1, maxCount=5, targetCpuUtilizationPercent=50, scaleUpDelay="PT10S")
    a = Autoscaler()
    st = a.decide(spec, AutoscaleStatus(desiredCount=1), Usage(cpu_percent=200), T0)
    assert st.desiredCount == 1 and st.aboveSince == T0
    st = a.decide(spec, st, Usage(cpu_percent=200), T0 + timedelta(seconds=10))
    assert st.desiredCount == 4
