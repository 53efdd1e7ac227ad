"""Per-second metering through the API: usage records, price sheet, stop, delete, restart, quota usages."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from corral_server import CorralServer, running_corral
from groups import container, delete, group, put, wait_for

RG = "it-metering"
PRICES = {"currency": "EUR", "cpuCoreSecond": 1.0, "memoryGBSecond": 2.0,
          "skus": {"Confidential": {"cpuCoreSecond": 10.0, "memoryGBSecond": 20.0}}}


@pytest.fixture(scope="module")
def corral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    """This module's own Corral (bridge ctnf0) with a price sheet."""
    root = tmp_path_factory.mktemp("corral-nf")
    sheet = root / "prices.yaml"
    sheet.write_text(json.dumps(PRICES))  # JSON is YAML too: this exercises the YAML loader
    with running_corral(root, bridge="ctnf0", subnet="10.68.0.0/16", cgroup_parent="/corral-test-nf",
                        extra=["--price-sheet", str(sheet)]) as server:
        yield server


def _records(client, **params: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    path = f"/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/usageRecords"
    return client.request("GET", path, params={"resourceGroup": RG, **params}).json()


def _row(client, name: str, **params: str) -> dict | None:  # type: ignore[no-untyped-def,type-arg]
    rows = [r for r in _records(client, **params)["value"] if r["name"] == name]
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


def _wait_row(client, name: str, pred, timeout: float = 30) -> dict:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    while True:
        row = _row(client, name)
        if row is not None and pred(row):
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.2)


def _usages(client) -> dict[str, int]:  # type: ignore[no-untyped-def]
    path = f"/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/locations/local/usages"
    return {u["name"]["value"]: u["currentValue"] for u in client.request("GET", path).json()["value"]}


def test_running_group_is_metered_per_second_at_its_requests_until_stopped(corral: CorralServer) -> None:
    client = corral.client()
    put(client, RG, "meter", group(container("meter-a", ["sleep", "3600"], cpu=0.5, memory=0.25),
                                   container("meter-b", ["sleep", "3600"], cpu=0.25, memory=0.25)))
    try:
        row = _wait_row(client, "meter", lambda r: r["seconds"] >= 2)
        assert row["running"] and not row["deleted"] and row["sku"] == "Standard"
        assert row["coreSeconds"] == pytest.approx(row["seconds"] * 0.75)
        assert row["gbSeconds"] == pytest.approx(row["seconds"] * 0.5)
        assert row["cost"] == pytest.approx(row["coreSeconds"] * 1.0 + row["gbSeconds"] * 2.0)
        assert row["currency"] == "EUR"
        assert _usages(client)["StandardCores"] >= 1

        client.request("POST", client.group_path(RG, "meter") + "/stop")
        stopped = _wait_row(client, "meter", lambda r: not r["running"])
        assert stopped["lastEnd"] is not None
        time.sleep(1.5)
        assert _row(client, "meter")["seconds"] == stopped["seconds"]  # type: ignore[index]
        assert _usages(client)["StandardCores"] == 0  # a stopped group holds no cores

        # Started again: a second interval adds up.
        client.wait_operation(client.request("POST", client.group_path(RG, "meter") + "/start"), timeout=60)
        again = _wait_row(client, "meter", lambda r: r["running"] and r["seconds"] >= stopped["seconds"] + 1)
        assert again["firstStart"] == stopped["firstStart"]
        # A window that ends before the group started shows nothing of it.
        assert _row(client, "meter", to=stopped["firstStart"]) is None
        # A window after the first run only counts the second.
        later = _row(client, "meter", **{"from": stopped["lastEnd"]})
        assert later is not None and later["seconds"] < again["seconds"]
    finally:
        delete(client, RG, "meter")
    row = _wait_row(client, "meter", lambda r: r["deleted"] and not r["running"])
    assert row["seconds"] >= 3


def test_sku_prices_totals_cli_and_records_survive_a_restart(corral: CorralServer) -> None:
    client = corral.client()
    put(client, RG, "job", group(container("meter-job", ["sh", "-c", "sleep 2"], cpu=1.0, memory=1.0),
                                 restartPolicy="Never"))
    put(client, RG, "conf", group(container("meter-conf", ["sleep", "3600"], cpu=0.1, memory=0.1),
                                  sku="Confidential", isolation="default"))
    try:
        wait_for(client, RG, "job", lambda g: g["properties"]["instanceView"]["state"] == "Succeeded")
        job = _wait_row(client, "job", lambda r: not r["running"])
        assert 2 <= job["seconds"] <= 4 and job["coreSeconds"] == job["seconds"]
        conf = _wait_row(client, "conf", lambda r: r["seconds"] >= 1)
        assert conf["sku"] == "Confidential"
        assert conf["cost"] == pytest.approx(conf["coreSeconds"] * 10.0 + conf["gbSeconds"] * 20.0)

        body = _records(client)
        assert body["resourceGroups"][RG]["groups"] == body["total"]["groups"] >= 2
        assert body["total"]["coreSeconds"] == pytest.approx(sum(r["coreSeconds"] for r in body["value"]))

        out = corral.cli("usage", "-g", RG).stdout
        assert "job" in out and "conf" in out and "EUR" in out and "total" in out
        assert json.loads(corral.cli("usage", "-g", RG, "-o", "json").stdout)["total"]["groups"] >= 2
    finally:
        delete(client, RG, "job")
    gone = _wait_row(client, "job", lambda r: r["deleted"])
    corral.stop()
    corral.start()
    client = corral.client()
    try:
        assert _row(client, "job")["seconds"] == gone["seconds"]  # type: ignore[index]
        # The running group kept running while Corral was down, and is still metered.
        before = _row(client, "conf")["seconds"]  # type: ignore[index]
        _wait_row(client, "conf", lambda r: r["running"] and r["seconds"] > before)
    finally:
        delete(client, RG, "conf")


def test_bad_window_is_a_400(corral: CorralServer) -> None:
    from corral.cli.client import ApiError

    client = corral.client()
    with pytest.raises(ApiError) as err:
        _records(client, **{"from": "yesterday"})
    assert err.value.status == 400 and "ISO 8601" in err.value.message

