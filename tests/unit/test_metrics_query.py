"""Metrics arithmetic: parameters of an Azure Monitor query, bucket layout, aggregation, the history's tiers
(memory, minute and hour rollups in a real SQLite store) and their compaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from corral.api.monitor import Subject, metrics_response
from corral.control.metering import Interval as MeteredInterval
from corral.control.metering import UsageRecord
from corral.control.metrics.history import MetricsHistory
from corral.control.metrics.membership import ngroup_members
from corral.control.metrics.query import (
    Interval,
    bucket_starts,
    format_duration,
    parse_aggregations,
    parse_duration,
    parse_filter,
    parse_interval,
    parse_metric_names,
    parse_orderby,
    parse_timespan,
    read_buckets,
    timeseries,
)
from corral.control.metrics.rollups import HOUR, METRICS, MINUTE, compact, rollup_prefix
from corral.control.metrics.stats import Stats
from corral.errors import InvalidMetricQuery
from corral.model.metrics import ContainerSample, GroupSample, MetricsReport
from corral.model.ngroup import NGroupMeta
from corral.store.base import Store
from corral.store.open import open_store

T0 = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "etcd"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store: SQLite (one server) or a namespace on a real etcd member (several servers)."""
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'store.db'}"
    else:
        url = request.getfixturevalue("etcd").url(request.getfixturevalue("etcd_namespace"))
    s = open_store(url)
    yield s
    s.close()


def test_stats_aggregations_and_exact_merge() -> None:
    a, b = Stats(), Stats()
    for v in (1.0, 5.0):
        a.add(v)
    b.add(3.0)
    a.merge(b)
    assert [a.value(x) for x in ("Average", "Minimum", "Maximum", "Total", "Count")] == [3.0, 1.0, 5.0, 9.0, 3.0]
    assert Stats().value("Average") is None
    assert Stats.load(a.dump()) == a


def test_durations_and_timespans() -> None:
    assert parse_duration("PT1H30M", "interval") == timedelta(hours=1, minutes=30)
    assert parse_duration("p1dt12h", "interval") == timedelta(days=1, hours=12)
    assert parse_duration("P1W", "interval") == timedelta(weeks=1)
    for bad in ("1h", "PT", "P1M2", "P1Y", ""):
        with pytest.raises(InvalidMetricQuery):
            parse_duration(bad, "interval")
    assert [format_duration(s) for s in (60, 3600, 5400, 86400, 4 * 3600, 45)] == [
        "PT1M", "PT1H", "PT1H30M", "P1D", "PT4H", "PT45S"]

    now = T0 + timedelta(hours=3)
    assert parse_timespan(None, now) == (now - timedelta(hours=1), now)
    assert parse_timespan("2026-11-22T09:00:00Z/2026-11-22T10:00:00Z", now) == (T0, T0 + timedelta(hours=1))
    assert parse_timespan("2026-11-22T09:00:00.000Z/PT30M", now) == (T0, T0 + timedelta(minutes=30))
    assert parse_timespan("PT2H/2026-11-22T11:00:00Z", now) == (T0, T0 + timedelta(hours=2))
    assert parse_timespan("PT15M", now) == (now - timedelta(minutes=15), now)
    # az encodes the timespan itself (naive UTC times from utcnow().isoformat()), and its HTTP layer again
    assert parse_timespan("2026-11-22T09%3A00%3A00.123456%2F2026-11-22T09%3A10%3A00", now) == (
        T0 + timedelta(microseconds=123456), T0 + timedelta(minutes=10))
    assert parse_timespan("2026-11-22T10:00:00+01:00/2026-11-22T10:00:00Z", now)[0] == T0
    for bad in ("yesterday", "2026-11-22T10:00:00Z/2026-11-22T09:00:00Z", "PT1H/PT2H", "a/b/c",
                "2026-13-01T00:00:00Z/PT1H", "P99999999999W", "P3650000D", "9999-12-31T23:59:59Z/PT1H"):
        with pytest.raises(InvalidMetricQuery) as exc:
            parse_timespan(bad, now)
        assert exc.value.target == "timespan" and exc.value.status == 400


def test_intervals_are_azure_grains_or_full() -> None:
    end = T0 + timedelta(hours=4)
    assert parse_interval(None, T0, end) == Interval(60)
    assert parse_interval("PT5M", T0, end) == Interval(300)
    assert parse_interval("P1D", T0, end) == Interval(86400)
    full = parse_interval("FULL", T0, end)
    assert full.full and full.seconds == 4 * 3600 and full.label == "PT4H"
    with pytest.raises(InvalidMetricQuery, match="PT1M, PT5M"):
        parse_interval("PT7M", T0, end)
    assert parse_interval("PT7M", T0, end, auto_adjust=True) == Interval(300)
    assert parse_interval("PT2H", T0, end, auto_adjust=True) == Interval(3600)
    with pytest.raises(InvalidMetricQuery, match="longer"):
        parse_interval("PT99999999999999H", T0, end, auto_adjust=True)


def test_bucket_layout_is_aligned_and_bounded() -> None:
    start = T0 + timedelta(minutes=2, seconds=30)
    starts = bucket_starts(start, T0 + timedelta(minutes=15), Interval(300))
    base = int(T0.timestamp())
    assert starts == [base, base + 300, base + 600]  # the bucket holding the start, to before the end
    assert bucket_starts(T0, T0 + timedelta(minutes=3), Interval(60)) == [base, base + 60, base + 120]
    assert bucket_starts(start, T0 + timedelta(hours=4), parse_interval("FULL", start, T0 + timedelta(hours=4))) == [
        base + 120]
    with pytest.raises(InvalidMetricQuery, match="points"):
        bucket_starts(T0, T0 + timedelta(days=30), Interval(60))


def test_names_aggregations_filters_orderby() -> None:
    assert [m.name for m in parse_metric_names("cpuusage,MemoryUsage")] == ["CpuUsage", "MemoryUsage"]
    assert [m.name for m in parse_metric_names(None)] == ["CpuUsage"]
    with pytest.raises(InvalidMetricQuery, match="valid metrics: CpuUsage"):
        parse_metric_names("CpuUsage,Percentage CPU")
    assert parse_aggregations("average, MAXIMUM,average", "Average") == ["Average", "Maximum"]
    assert parse_aggregations(None, "Average") == ["Average"]
    with pytest.raises(InvalidMetricQuery, match="'median' is not an aggregation"):
        parse_aggregations("median", "Average")
    assert parse_filter("containerName eq '*'") == {"containerName": None}
    assert parse_filter("(containername eq 'web' or containerName eq 'side')") == {"containerName": {"web", "side"}}
    assert parse_filter("containerName eq 'it''s'") == {"containerName": {"it's"}}
    assert parse_filter(" ") == {}
    for bad in ("containerName ne 'web'", "Tier eq 'Hot'", "containerName eq web",
                "containerName eq 'a' and containerName eq 'b'"):
        with pytest.raises(InvalidMetricQuery) as exc:
            parse_filter(bad)
        assert exc.value.target == "$filter"
    assert parse_orderby("maximum desc", ["Average", "Maximum"]) == ("Maximum", True)
    with pytest.raises(InvalidMetricQuery):
        parse_orderby("total", ["Average"])


def _sample(t: datetime, uid: str = "u1", rx: float | None = None, **cpus: float) -> GroupSample:
    return GroupSample(uid=uid, time=t, rxBytesPerSecond=rx, txBytesPerSecond=rx,
                       containers={n: ContainerSample(cpu=c, memoryBytes=int(c * 1000)) for n, c in cpus.items()})


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t.timestamp()

    def __call__(self) -> float:
        return self.t


def test_history_minutes_reach_the_store_once_and_read_the_same(store: Store) -> None:
    clock = Clock(T0 + timedelta(seconds=30))
    h = MetricsHistory(store, clock=clock, grace=15)
    h.receive(MetricsReport(node="n", groups=[_sample(T0 + timedelta(seconds=5), web=0.5, side=0.1, rx=100.0)]))
    h.receive(MetricsReport(node="n", groups=[_sample(T0 + timedelta(seconds=10), web=1.5, side=0.1, rx=300.0)]))
    h.receive(MetricsReport(node="n", groups=[_sample(T0 + timedelta(seconds=65), web=1.0)]))
    base = int(T0.timestamp())
    before = h.minutes("u1", base, base + 120)  # all in memory
    h.flush()
    assert store.list(rollup_prefix("u1", MINUTE)) == []  # the first minute is not over plus its grace yet
    clock.t = base + 76
    h.flush()
    assert [r.value["start"] for r in store.list(rollup_prefix("u1", MINUTE))] == [base]
    after = h.minutes("u1", base, base + 120)
    assert after.keys() == before.keys() == {base, base + 60}
    cpu = after[base]["CpuUsage"]
    assert cpu["web"].value("Average") == 1000.0 and cpu["side"].value("Total") == 200.0
    assert cpu[""].value("Maximum") == pytest.approx(1600.0)  # the group: containers summed per sample
    assert after[base]["NetworkBytesReceivedPerSecond"][""].value("Average") == 200.0
    # A late sample for a minute already written merges into it instead of replacing it.
    h.receive(MetricsReport(node="n", groups=[_sample(T0 + timedelta(seconds=20), web=3.0)]))
    h.stop()  # flushes everything
    merged = MetricsHistory(store).minutes("u1", base, base + 120)  # a restarted (or another) server
    assert merged[base]["CpuUsage"]["web"].value("Count") == 3 and merged[base + 60]["CpuUsage"]["web"].count == 1


def test_query_buckets_series_and_compaction(store: Store) -> None:
    base = int(T0.timestamp())
    store.put("/groups/s/rg/g", {"meta": {"uid": "u1"}})
    clock = Clock(T0)
    h = MetricsHistory(store, clock=clock, grace=0)
    for minute in range(120):  # two hours, one sample a minute: web at 1 core, idle at 0.01
        h.receive(MetricsReport(node="n", groups=[
            _sample(T0 + timedelta(minutes=minute), web=1.0, idle=0.01),
            _sample(T0 + timedelta(minutes=minute), uid="gone", web=1.0)]))
    clock.t = base + 2 * HOUR
    h.flush()
    now = T0 + timedelta(hours=2)
    starts = bucket_starts(T0, now, Interval(1800))
    buckets = read_buckets(h, ["u1"], starts, Interval(1800), now)
    series = timeseries(buckets, parse_metric_names("CpuUsage")[0], {"containerName": None})
    assert [s.dimension for s in series] == ["idle", "web"]
    assert [b.count for b in series[1].buckets] == [30, 30, 30, 30]
    top = timeseries(buckets, parse_metric_names("CpuUsage")[0], {"containerName": None}, top=1,
                     orderby=("Average", True))
    assert [s.dimension for s in top] == ["web"]
    whole = timeseries(buckets, parse_metric_names("CpuUsage")[0], {})
    assert whole[0].dimension is None and whole[0].buckets[0].value("Average") == pytest.approx(1010.0)
    # Two groups (an NGroup's members) merge: averages per member sample, totals add up.
    both = read_buckets(h, ["u1", "gone"], starts, Interval(1800), now)
    assert both[0]["CpuUsage"]["web"].count == 60

    # Compaction: finished hours are rolled up, old minutes dropped, groups that are gone removed.
    compact(store, base + 3 * HOUR + 2 * MINUTE)  # hour 2 is not settled yet
    assert [r.value["start"] for r in store.list(rollup_prefix("u1", HOUR))] == [base, base + HOUR]
    assert store.list(f"{METRICS}gone/") == []
    compact(store, base + 4 * HOUR)  # minutes are kept three hours
    minutes_left = store.list(rollup_prefix("u1", MINUTE))
    assert minutes_left and min(r.value["start"] for r in minutes_left) >= base + HOUR
    # A query in whole hours reads the hour rollups; the same numbers as from the minutes.
    later = T0 + timedelta(hours=5)
    hourly = read_buckets(h, ["u1"], bucket_starts(T0, now, Interval(HOUR)), Interval(HOUR), later)
    assert [b["CpuUsage"]["web"].count for b in hourly] == [60, 60]
    start, end = parse_timespan("0001-01-02T00:00:00Z/9999-12-30T00:00:00Z", later)  # FULL over every year
    full = parse_interval("FULL", start, end)
    assert read_buckets(h, ["u1"], bucket_starts(start, end, full), full, later)[0]["CpuUsage"]["web"].count == 120
    body = metrics_response(h, Subject("/subscriptions/s/resourceGroups/rg/providers/x/g", "local",
                                       lambda start, end: [("g", "u1")]), {
        "metricnames": "CpuUsage,MemoryUsage", "timespan": "2026-11-22T09:00:00Z/PT2H", "interval": "PT1H",
        "aggregation": "average,count", "$filter": "containerName eq 'web'"}, now=later)
    assert body["interval"] == "PT1H" and body["timespan"] == "2026-11-22T09:00:00Z/2026-11-22T11:00:00Z"
    cpu = body["value"][0]
    assert cpu["name"] == {"value": "CpuUsage", "localizedValue": "CPU Usage"} and cpu["unit"] == "Count"
    ts = cpu["timeseries"]
    assert len(ts) == 1 and ts[0]["metadatavalues"][0]["value"] == "web"
    assert ts[0]["data"] == [{"timeStamp": "2026-11-22T09:00:00Z", "average": 1000.0, "count": 60.0},
                             {"timeStamp": "2026-11-22T10:00:00Z", "average": 1000.0, "count": 60.0}]
    assert body["value"][1]["timeseries"][0]["data"][0]["average"] == 1000.0  # memory: 1000 bytes per core here


def test_two_servers_sharing_a_store_add_up_their_parts_of_a_minute(store: Store) -> None:
    clock = Clock(T0 + timedelta(minutes=5))
    a, b = MetricsHistory(store, clock=clock), MetricsHistory(store, clock=clock)
    a.receive(MetricsReport(node="n", groups=[_sample(T0 + timedelta(seconds=5), web=1.0)]))
    b.receive(MetricsReport(node="n", groups=[_sample(T0 + timedelta(seconds=40), web=3.0)]))  # the agent moved
    a.flush()
    b.flush()
    base = int(T0.timestamp())
    web = MetricsHistory(store).minutes("u1", base, base + 60)[base]["CpuUsage"]["web"]
    assert (web.count, web.value("Average"), web.value("Maximum")) == (2, 2000.0, 3000.0)
    assert len(store.list(rollup_prefix("u1", MINUTE))) == 1


def test_ngroup_metrics_count_each_member_while_it_ran(store: Store) -> None:
    """An NGroup's metrics pool its members' samples (or split them by containerGroupName), count a member
    deleted since for the time it ran, and keep its rollups while the NGroup exists."""
    ng = NGroupMeta(uid="ng1", subscription="s", resourceGroup="rg", name="web", createdAt=T0, revision=1)
    store.put("/ngroups/s/rg/web", {"meta": {"uid": "ng1"}})
    runs = {"a": (0, 60, "ng1"), "b": (30, None, "ng1"), "c": (0, None, None)}  # minutes; c is not a member
    for uid, (first, last, owner) in runs.items():
        end = None if last is None else T0 + timedelta(minutes=last)
        rec = UsageRecord(uid=uid, subscription="s", resourceGroup="rg", name=f"web-{uid}", ngroup=owner,
                          intervals=[MeteredInterval(start=T0 + timedelta(minutes=first), end=end, cpu=1, memoryGB=1)])
        store.put(f"/metering/s/rg/{uid}", rec.model_dump(mode="json"))
    for uid in ("b", "c"):  # a was deleted
        store.put(f"/groups/s/rg/{uid}", {"meta": {"uid": uid}})
    clock = Clock(T0 + timedelta(minutes=90))
    h = MetricsHistory(store, clock=clock, grace=0)
    for minute in range(90):
        t = T0 + timedelta(minutes=minute)
        samples = [_sample(t, uid="c", web=2.0)]
        samples += [_sample(t, uid="a", web=1.0)] if minute < 60 else []
        samples += [_sample(t, uid="b", web=0.5, rx=10.0)] if minute >= 30 else []
        h.receive(MetricsReport(node="n", groups=samples))
    h.flush()
    rid = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerInstance/ngroups/web"
    subject = Subject(rid, "local", lambda start, end: ngroup_members(store, ng, start, end), ngroup=True)
    q = {"timespan": "2026-11-22T09:00:00Z/PT90M", "interval": "PT30M", "aggregation": "Average,Count"}
    now = T0 + timedelta(minutes=90)

    pooled = metrics_response(h, subject, {**q, "metricnames": "CpuUsage"}, now=now)
    assert pooled["namespace"] == "Microsoft.ContainerInstance/ngroups"
    assert [(p["average"], p["count"]) for p in pooled["value"][0]["timeseries"][0]["data"]] == [
        (1000.0, 30.0), (750.0, 60.0), (500.0, 30.0)]  # a alone, a and b, b alone
    split = metrics_response(h, subject, {**q, "$filter": "containerGroupName eq '*'"}, now=now)
    series = split["value"][0]["timeseries"]
    assert [ts["metadatavalues"] for ts in series] == [
        [{"name": {"value": "containergroupname", "localizedValue": "containerGroupName"}, "value": f"web-{m}"}]
        for m in ("a", "b")]
    assert [p.get("count") for p in series[0]["data"]] == [30.0, 30.0, None]
    both = metrics_response(h, subject, {**q, "metricnames": "CpuUsage,NetworkBytesReceivedPerSecond",
                                         "$filter": "containerGroupName eq 'web-b' and containerName eq '*'"}, now=now)
    cpu, net = both["value"]
    assert [[d["value"] for d in ts["metadatavalues"]] for ts in cpu["timeseries"]] == [["web-b", "web"]]
    assert [[d["value"] for d in ts["metadatavalues"]] for ts in net["timeseries"]] == [["web-b"]]
    assert ngroup_members(store, ng, int((T0 + timedelta(minutes=65)).timestamp()), int(now.timestamp())) == [
        ("web-b", "b")]  # a had stopped by then
    with pytest.raises(InvalidMetricQuery, match="containerName"):  # a container group has no member dimension
        metrics_response(h, Subject(rid, None, lambda start, end: [("c", "c")]),
                         {"$filter": "containerGroupName eq '*'"}, now=now)

    compact(store, now.timestamp())
    assert store.list(rollup_prefix("a", MINUTE))  # kept: its NGroup counts it
    store.delete("/ngroups/s/rg/web")
    compact(store, now.timestamp())
    assert store.list(f"{METRICS}a/") == [] and store.list(rollup_prefix("b", MINUTE))
