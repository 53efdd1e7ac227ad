"""Metering arithmetic and the price sheet (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from corral.control.metering import Interval, PriceSheet, UsageRecord, usage_row
from corral.errors import InvalidRequest

T0 = datetime(2026, 11, 22, 0, 0, 0, tzinfo=UTC)


def _rec(*spans: tuple[float, float | None], cpu: float = 2.0, mem: float = 4.0, sku: str = "Standard") -> UsageRecord:
    return UsageRecord(uid="u", subscription="s", resourceGroup="rg", name="g", sku=sku, intervals=[
        Interval(start=T0 + timedelta(seconds=a), end=None if b is None else T0 + timedelta(seconds=b),
                 cpu=cpu, memoryGB=mem)
        for a, b in spans
    ])


def test_every_started_second_is_billed_at_the_requests() -> None:
    row = usage_row(_rec((0, 10.2)), PriceSheet())
    assert row.seconds == 11 and row.coreSeconds == 22 and row.gbSeconds == 44
    assert row.cost == pytest.approx(22 * 0.0000113 + 44 * 0.0000012, abs=1e-6)
    assert not row.running and row.lastEnd == T0 + timedelta(seconds=10.2)


def test_open_interval_runs_until_now_and_windows_clip() -> None:
    now = T0 + timedelta(seconds=100)
    rec = _rec((0, 10), (50, None))
    assert usage_row(rec, PriceSheet(), now=now).seconds == 60
    assert usage_row(rec, PriceSheet(), start=T0 + timedelta(seconds=5), now=now).seconds == 55
    assert usage_row(rec, PriceSheet(), end=T0 + timedelta(seconds=20), now=now).seconds == 10
    assert usage_row(rec, PriceSheet(), start=T0 + timedelta(seconds=20), end=T0 + timedelta(seconds=40),
                     now=now).seconds == 0
    assert usage_row(rec, PriceSheet(), now=now).running


def test_sku_rates_override_the_defaults(tmp_path: Path) -> None:
    sheet = tmp_path / "p.yaml"
    sheet.write_text("currency: EUR\ncpuCoreSecond: 1\nmemoryGBSecond: 0\nskus:\n  Confidential: {cpuCoreSecond: 3}\n")
    prices = PriceSheet.load(sheet)
    assert usage_row(_rec((0, 1), cpu=1), prices).cost == 1
    conf = usage_row(_rec((0, 1), cpu=1, sku="Confidential"), prices)
    assert conf.cost == 3 and conf.currency == "EUR"  # memory: the sheet's rate (0), not the default


def test_a_bad_price_sheet_says_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text('{"cpuCoreSecond": -1}')
    with pytest.raises(InvalidRequest, match="not valid"):
        PriceSheet.load(bad)
    with pytest.raises(InvalidRequest, match="cannot read"):
        PriceSheet.load(tmp_path / "missing.json")
    assert PriceSheet.load(None).currency == "USD"
