"""Autoscale: recent usage from successive readings of the metrics API, and the HPA-like rule with its delays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from corral.model.ngroup import Autoscale, AutoscaleStatus
from corral.orchestrator.autoscale import Autoscaler, Usage, UsageMeter, average, by_member, usage_of, wanted

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def metrics(cpu: dict[str, tuple[float, int]], memory: dict[str, tuple[float, int]] | None = None,
            ) -> dict[str, object]:
    """The body of GET {group id}/providers/Microsoft.Insights/metrics with aggregation=Total,Count: one series
    (the whole group), a bucket per minute (minute -> (total, count)), the last one the minute in progress."""
    def series(points: dict[str, tuple[float, int]]) -> dict[str, object]:
        return {"metadatavalues": [], "data": [
            {"timeStamp": f"2026-01-01T00:{m}:00Z", **({"total": t, "count": n} if n else {})}
            for m, (t, n) in sorted(points.items())]}
    value: list[dict[str, object]] = [{"name": {"value": "CpuUsage", "localizedValue": "CPU Usage"}, "unit": "Count",
                                       "timeseries": [series(cpu)]}]
    if memory is not None:
        value.append({"name": {"value": "MemoryUsage"}, "unit": "Bytes", "timeseries": [series(memory)]})
    return {"value": value, "timespan": "2026-01-01T00:00:00Z/2026-01-01T00:02:00Z", "interval": "PT1M"}


GROUP = {"properties": {"containers": [
    {"name": "c0", "properties": {"resources": {"requests": {"cpu": 0.5, "memoryInGB": 1.0}}}},
    {"name": "c1", "properties": {"resources": {"requests": {"cpu": 0.5, "memoryInGB": 1.0}}}}]}}


def test_the_meter_measures_the_samples_since_its_last_reading_not_the_minute() -> None:
    meter = UsageMeter()
    # First reading: the minute in progress so far (10 idle samples at 0 and 2 busy ones at 1000 millicores).
    assert meter.update(metrics({"00": (5000.0, 10), "01": (2000.0, 12)})) == {"cpuusage": 2000.0 / 12}
    # Two more busy samples arrived: only they count, not the idle start of the minute.
    assert meter.update(metrics({"00": (5000.0, 10), "01": (4000.0, 14)})) == {"cpuusage": 1000.0}
    # Nothing new: the last value holds.
    assert meter.update(metrics({"00": (5000.0, 10), "01": (4000.0, 14)})) == {"cpuusage": 1000.0}
    # The minute turned: the last samples of the old one and the first of the new one.
    assert meter.update(metrics({"01": (4100.0, 15), "02": (100.0, 1)})) == {"cpuusage": 100.0}
    # A reading that no longer overlaps (the orchestrator paused for minutes): the latest bucket's average.
    assert meter.update(metrics({"07": (900.0, 3), "08": (600.0, 2)}, {"08": (2.0 * 2 ** 30, 2)})) == {
        "cpuusage": 300.0, "memoryusage": 2 ** 30}


def test_an_ngroup_answer_split_by_member_reads_as_each_member_s_own() -> None:
    def member(name: str, total: float) -> dict[str, object]:
        return {"metadatavalues": [{"name": {"value": "containergroupname", "localizedValue": "containerGroupName"},
                                    "value": name}],
                "data": [{"timeStamp": "2026-01-01T00:01:00Z", "total": total, "count": 2}]}
    answer = {"value": [{"name": {"value": "CpuUsage"}, "timeseries": [member("a", 100.0), member("b", 50.0)]},
                        {"name": {"value": "MemoryUsage"}, "timeseries": [member("a", 4.0)]}]}
    split = by_member(answer)
    assert set(split) == {"a", "b"}
    assert UsageMeter().update(split["a"]) == {"cpuusage": 50.0, "memoryusage": 2.0}
    assert UsageMeter().update(split["b"]) == {"cpuusage": 25.0}
    assert split["a"]["value"][0]["timeseries"][0]["metadatavalues"] == []


def test_usage_is_relative_to_what_the_group_requests() -> None:
    u = usage_of(GROUP, {"cpuusage": 750.0, "memoryusage": 2 ** 30})
    assert u.cpu_percent == 75.0 and u.memory_percent == 50.0
    assert usage_of(GROUP, {}) == Usage()
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
