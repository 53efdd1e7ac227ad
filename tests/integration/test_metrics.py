"""Container metrics end to end: the agent samples a busy and an idle container, the control plane keeps the
history, and the Azure Monitor metrics API serves it to raw HTTP, azure-mgmt-monitor and `az monitor metrics
list`, and an NGroup's over its members; Prometheus' /metrics shows the same server's families."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from azure.mgmt.monitor import MonitorManagementClient
from corral_server import CorralServer, running_corral
from groups import container, delete, group, put, wait_for
from orchestration import (
    clean_resource_group,
    get_ngroup,
    members,
    ngroup_body,
    ngroup_path,
    profile_body,
    profile_id,
    put_ngroup,
    put_profile,
    rg_path,
    wait_until,
)
from prometheus_client.parser import text_string_to_metric_families

from corral.cli.azlogin import REPO_AZ, az_env

RG = "metrics"
BUSY = ["sh", "-c", "trap 'exit 0' TERM; while :; do :; done"]
IDLE = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
MON_VERSION = {"api-version": "2018-01-01"}


class Token:
    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    root = tmp_path_factory.mktemp("cme-metrics")
    with running_corral(root, bridge="cme0", subnet="10.83.0.0/16", cgroup_parent="/cme-metrics",
                        extra=["--metrics-interval", "1"], env={"AZURE_CONFIG_DIR": str(root / "azure")}) as srv:
        yield srv


@pytest.fixture(scope="module")
def pair(server: CorralServer) -> Iterator[str]:
    """One group with a busy and an idle container, Running and sampled for a few seconds; its resource id."""
    client = server.client()
    body = group(container("busy", BUSY, cpu=0.2, memory=0.1), container("idle", IDLE, cpu=0.2, memory=0.1))
    g = put(client, RG, "pair", body)
    wait_for(client, RG, "pair", lambda g: g["properties"]["instanceView"]["state"] == "Running")
    yield g["id"]
    delete(client, RG, "pair")


def get(server: CorralServer, path: str, **params: str) -> httpx.Response:
    cfg = server.config
    return httpx.get(f"{cfg.endpoint}{path}", params={**MON_VERSION, **params},
                     headers={"Authorization": f"Bearer {cfg.token}"},
                     verify=ssl.create_default_context(cafile=cfg.ca_cert), timeout=30)


def metrics(server: CorralServer, rid: str, **params: str) -> httpx.Response:
    return get(server, f"{rid}/providers/microsoft.insights/metrics", **params)


def wait_samples(server: CorralServer, rid: str, count: int = 3, timeout: float = 30) -> dict[str, Any]:
    """The last minutes of CpuUsage split by container once each container has ``count`` samples."""
    deadline = time.monotonic() + timeout
    while True:
        r = metrics(server, rid, metricnames="CpuUsage", timespan="PT5M", aggregation="Count,Average",
                    interval="FULL", **{"$filter": "containerName eq '*'"})
        assert r.status_code == 200, r.text
        series = {ts["metadatavalues"][0]["value"]: ts["data"][0] for ts in r.json()["value"][0]["timeseries"]}
        if len(series) == 2 and all(p.get("count", 0) >= count for p in series.values()):
            return series
        assert time.monotonic() < deadline, f"no samples of both containers after {timeout} s: {r.text}"
        time.sleep(0.5)


def test_monitor_api_busy_beats_idle_and_rejects_bad_queries(server: CorralServer, pair: str) -> None:
    series = wait_samples(server, pair)
    # millicores; busy is capped at 200 and gets less on a loaded machine, idle gets next to nothing
    assert series["busy"]["average"] > max(20.0, 10 * series["idle"]["average"]), series

    now = datetime.now(UTC)
    span = f"{(now - timedelta(minutes=3)).isoformat()}/{now.isoformat()}"
    r = metrics(server, pair, metricnames="CpuUsage,MemoryUsage,NetworkBytesReceivedPerSecond", timespan=span,
                interval="PT1M", aggregation="Average,Maximum,Count")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["interval"] == "PT1M" and body["namespace"] == "Microsoft.ContainerInstance/containerGroups"
    cpu, mem, net = body["value"]
    assert cpu["id"] == f"{pair}/providers/Microsoft.Insights/metrics/CpuUsage" and cpu["errorCode"] == "Success"
    assert len(cpu["timeseries"]) == 1 and cpu["timeseries"][0]["metadatavalues"] == []  # the whole group
    points = [p for p in cpu["timeseries"][0]["data"] if "average" in p]
    assert points and max(p["average"] for p in points) > 20
    assert len(cpu["timeseries"][0]["data"]) in (3, 4)  # minutes of the span, aligned
    assert any(p.get("average", 0) > 100_000 for p in mem["timeseries"][0]["data"])  # two shells' working set
    assert net["unit"] == "Bytes" and net["timeseries"][0]["metadatavalues"] == []

    defs = get(server, f"{pair}/providers/Microsoft.Insights/metricDefinitions").json()
    assert [d["name"]["value"] for d in defs["value"]] == [
        "CpuUsage", "MemoryUsage", "NetworkBytesReceivedPerSecond", "NetworkBytesTransmittedPerSecond"]
    assert defs["value"][0]["dimensions"] == [{"value": "containerName", "localizedValue": "containerName"}]

    for params, target in (({"metricnames": "Percentage CPU"}, "metricnames"),
                           ({"aggregation": "p99"}, "aggregation"),
                           ({"timespan": "last-hour"}, "timespan"),
                           ({"interval": "PT7M"}, "interval"),
                           ({"$filter": "zone eq '1'"}, "$filter")):
        r = metrics(server, pair, **params)
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "BadRequest" and err["target"] == target, err
    assert metrics(server, pair.replace("/pair", "/nosuch")).status_code == 404


def test_azure_mgmt_monitor_reads_cpu_and_memory(server: CorralServer, pair: str) -> None:
    wait_samples(server, pair)
    cfg = server.config
    mon = MonitorManagementClient(Token(cfg.token), cfg.subscription, base_url=cfg.endpoint,
                                  connection_verify=cfg.ca_cert, retry_total=0)
    defs = list(mon.metric_definitions.list(pair))
    assert {d.name.value for d in defs} >= {"CpuUsage", "MemoryUsage"}
    now = datetime.now(UTC)
    res = mon.metrics.list(pair, timespan=f"{(now - timedelta(minutes=5)).isoformat()}/{now.isoformat()}",
                           interval="PT1M", metricnames="CpuUsage,MemoryUsage",
                           aggregation="Average,Maximum", filter="containerName eq '*'")
    cpu = {ts.metadatavalues[0].value: [p.average for p in ts.data if p.average is not None]
           for ts in res.value[0].timeseries}
    assert set(cpu) == {"busy", "idle"} and max(cpu["busy"]) > max(cpu["idle"])
    assert res.value[1].unit == "Bytes"
    assert all(p.time_stamp.tzinfo is not None for ts in res.value[1].timeseries for p in ts.data)


@pytest.mark.skipif(not REPO_AZ.exists(), reason=f"the Azure CLI is not installed at {REPO_AZ} (`make az`)")
def test_az_monitor_metrics_list(server: CorralServer, pair: str) -> None:
    wait_samples(server, pair)
    server.cli("az-login", "--az", str(REPO_AZ))
    env = {**server.env, **az_env(server.config)}
    res = subprocess.run([str(REPO_AZ), "monitor", "metrics", "list", "--resource", pair, "--metric", "CpuUsage",
                          "--dimension", "containerName", "--offset", "5m", "--aggregation", "Average",
                          "-o", "json"], env=env, capture_output=True, text=True, timeout=180,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    cpu = {ts["metadatavalues"][0]["value"]: [p["average"] for p in ts["data"] if p.get("average") is not None]
           for ts in out["value"][0]["timeseries"]}
    assert set(cpu) == {"busy", "idle"} and max(cpu["busy"]) > max(cpu["idle"])
    bad = subprocess.run([str(REPO_AZ), "monitor", "metrics", "list", "--resource", pair, "--metric", "Bogus"],
                         env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert bad.returncode != 0 and "Bogus" in bad.stderr


def scrape(server: CorralServer, token: str) -> dict[str, Any]:
    r = httpx.get(f"{server.config.endpoint}/metrics", headers={"Authorization": f"Bearer {token}"},
                  verify=ssl.create_default_context(cafile=server.config.ca_cert), timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def value(families: dict[str, Any], family: str, sample: str | None = None, **labels: str) -> float | None:
    for s in families[family].samples:
        if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


def test_prometheus_families_follow_groups(server: CorralServer, pair: str) -> None:
    wait_samples(server, pair, count=1)
    scrape_token = (server.data_dir / "control" / "scrape-token").read_text().strip()
    fams = scrape(server, scrape_token)
    for family in ("corral_api_requests", "corral_api_request_duration_seconds", "corral_container_groups",
                   "corral_scheduler_pending_groups", "corral_scheduler_attempt_duration_seconds",
                   "corral_node_cpu_cores", "corral_node_allocated_cpu_cores", "corral_node_ready",
                   "corral_container_cpu_usage_cores", "corral_container_memory_working_set_bytes",
                   "corral_container_restarts", "corral_image_pull_duration_seconds",
                   "corral_network_pool_ready_sandboxes", "corral_standby_pool_ready_groups", "corral_failovers",
                   "process_cpu_seconds"):
        assert family in fams, family
    route = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups/{name}"
    assert value(fams, "corral_api_requests", method="PUT", route=route, code="201") == 1
    assert value(fams, "corral_api_request_duration_seconds", "corral_api_request_duration_seconds_count",
                 method="GET", route=route) >= 1
    busy = value(fams, "corral_container_cpu_usage_cores", resource_group=RG, container_group="pair",
                 container="busy")
    assert busy is not None and busy > 0.02
    assert value(fams, "corral_container_restarts", "corral_container_restarts_total", container="idle") == 0
    running = value(fams, "corral_container_groups", state="Running")
    assert running is not None and running >= 1
    assert value(fams, "corral_node_allocated_cpu_cores") >= 0.4 and value(fams, "corral_node_ready") == 1
    assert value(fams, "corral_scheduler_attempt_duration_seconds", "corral_scheduler_attempt_duration_seconds_count",
                 result="scheduled") >= 1
    assert value(fams, "corral_scheduler_scheduling_latency_seconds",
                 "corral_scheduler_scheduling_latency_seconds_count") >= 1

    client = server.client()
    put(client, RG, "extra", group(container("solo", IDLE)))
    wait_for(client, RG, "extra", lambda g: g["properties"]["instanceView"]["state"] == "Running")
    deadline = time.monotonic() + 20
    while True:  # the state families are cached for a few seconds
        fams = scrape(server, server.config.token)
        if value(fams, "corral_container_groups", state="Running") == running + 1 and value(
                fams, "corral_container_cpu_usage_cores", container_group="extra") is not None:
            break
        assert time.monotonic() < deadline, "the new group does not show in /metrics"
        time.sleep(1)
    delete(client, RG, "extra")
    deadline = time.monotonic() + 20
    while value(fams := scrape(server, scrape_token), "corral_container_groups", state="Running") != running:
        assert time.monotonic() < deadline, "the deleted group still counts in /metrics"
        time.sleep(1)
    assert value(fams, "corral_container_restarts", "corral_container_restarts_total", container_group="extra") is None

    # The scrape token opens /metrics only; a wrong token opens nothing.
    cfg = server.config
    verify = ssl.create_default_context(cafile=cfg.ca_cert)
    for path, token in (("/metrics", "wrong"), (f"{pair}?api-version=2023-05-01", scrape_token)):
        r = httpx.get(f"{cfg.endpoint}{path}", headers={"Authorization": f"Bearer {token}"}, verify=verify)
        assert r.status_code == 401, (path, r.text)
    assert httpx.get(f"{cfg.endpoint}/metrics", verify=verify).status_code == 401


def test_history_survives_a_restart(server: CorralServer, pair: str) -> None:
    before = wait_samples(server, pair)
    server.stop()  # flushes the minute in progress; the containers keep running
    server.start()
    after = wait_samples(server, pair, count=1)
    for name in ("busy", "idle"):
        assert after[name]["count"] >= before[name]["count"], (before, after)


NG_RG = "metricsng"


def ng_metrics(server: CorralServer, ngroup: str, **params: str) -> dict[str, Any]:
    r = metrics(server, ngroup, metricnames="CpuUsage,MemoryUsage", timespan="PT10M", interval="FULL",
                aggregation="Average,Count", **params)
    assert r.status_code == 200, r.text
    return r.json()


def by_member(body: dict[str, Any]) -> dict[str, float]:
    """MemoryUsage sample counts by member."""
    return {ts["metadatavalues"][0]["value"]: ts["data"][0].get("count", 0)
            for ts in body["value"][1]["timeseries"]}


def test_ngroup_metrics_and_families_follow_members(server: CorralServer) -> None:
    """An NGroup's metrics over its members (one that left still counts for the time it ran) through raw HTTP,
    azure-mgmt-monitor and az; the NGroup and standby-pool families of /metrics follow scale changes."""
    client = server.client()
    idle = "trap 'exit 0' TERM; sleep 3600 & wait"
    try:
        put_profile(client, NG_RG, "member", profile_body(probe=False, command=idle))
        resp = put_ngroup(client, NG_RG, "web", ngroup_body(client, NG_RG, "member", 2, mode="Manual"))
        assert client.wait_operation(resp, timeout=90)["status"] == "Succeeded"
        pool = f"{rg_path(client, NG_RG, 'Microsoft.StandbyPool')}/standbyContainerGroupPools/warm"
        client.request("PUT", pool, json={"location": "local", "properties": {
            "elasticityProfile": {"maxReadyCapacity": 1},
            "containerGroupProperties": {"containerGroupProfile": {"id": profile_id(client, NG_RG, "member")}}}})
        ng = get_ngroup(client, NG_RG, "web")
        ng_id = ng["id"]
        names = sorted(m["name"] for m in ng["properties"]["status"]["members"])
        split = {"$filter": "containerGroupName eq '*'"}
        wait_until("samples of both members", lambda: sorted(by_member(ng_metrics(server, ng_id, **split))) == names,
                   timeout=30)

        pooled = ng_metrics(server, ng_id)
        assert pooled["namespace"] == "Microsoft.ContainerInstance/ngroups"
        cpu, mem = pooled["value"]
        assert cpu["id"] == f"{ng_id}/providers/Microsoft.Insights/metrics/CpuUsage"
        assert mem["timeseries"][0]["metadatavalues"] == [] and mem["timeseries"][0]["data"][0]["average"] > 100_000
        defs = get(server, f"{ng_id}/providers/Microsoft.Insights/metricDefinitions").json()["value"]
        assert [d["value"] for d in defs[0]["dimensions"]] == ["containerGroupName", "containerName"]
        bad = metrics(server, ng_id, metricnames="Percentage CPU")
        assert bad.status_code == 400 and "Microsoft.ContainerInstance/ngroups" in bad.json()["error"]["message"]

        cfg = server.config
        mon = MonitorManagementClient(Token(cfg.token), cfg.subscription, base_url=cfg.endpoint,
                                      connection_verify=cfg.ca_cert, retry_total=0)
        res = mon.metrics.list(ng_id, timespan="PT10M", interval="PT1M", metricnames="MemoryUsage",
                               aggregation="Average", filter="containerGroupName eq '*' and containerName eq '*'")
        assert sorted(ts.metadatavalues[0].value for ts in res.value[0].timeseries) == names
        assert {ts.metadatavalues[1].value for ts in res.value[0].timeseries} == {"web"}
        if REPO_AZ.exists():
            server.cli("az-login", "--az", str(REPO_AZ))
            out = subprocess.run([str(REPO_AZ), "monitor", "metrics", "list", "--resource", ng_id, "--metric",
                                  "MemoryUsage", "--dimension", "containerGroupName", "--offset", "10m", "-o", "json"],
                                 env={**server.env, **az_env(cfg)}, capture_output=True, text=True, timeout=180,
                                 stdin=subprocess.DEVNULL)
            assert out.returncode == 0, out.stderr
            assert sorted(ts["metadatavalues"][0]["value"] for ts in json.loads(out.stdout)["value"][0][
                "timeseries"]) == names

        labels = {"resource_group": NG_RG}

        def families(desired: int, pool_target: int) -> bool:
            fams = scrape(server, cfg.token)
            return (value(fams, "corral_ngroup_desired_members", ngroup="web", **labels),
                    value(fams, "corral_ngroup_ready_members", ngroup="web", **labels),
                    value(fams, "corral_standby_pool_target_groups", pool="warm", **labels),
                    value(fams, "corral_standby_pool_ready_groups", pool="warm", **labels)) == (
                desired, desired, pool_target, pool_target)
        wait_until("NGroup and pool families at 2 and 1", lambda: families(2, 1), timeout=30)

        resp = client.request("PATCH", ngroup_path(client, NG_RG, "web"),
                              json={"properties": {"elasticProfile": {"desiredCount": 1}}})
        assert client.wait_operation(resp, timeout=60)["status"] == "Succeeded"
        client.request("PATCH", pool, json={"properties": {"elasticityProfile": {"maxReadyCapacity": 0}}})
        wait_until("NGroup and pool families at 1 and 0", lambda: families(1, 0), timeout=30)
        wait_until("one member left", lambda: len(members(client, NG_RG, "web")) == 1, timeout=30)
        # The member that left still counts for the minutes it ran.
        assert sorted(by_member(ng_metrics(server, ng_id, **split))) == names
    finally:
        clean_resource_group(client, NG_RG)
