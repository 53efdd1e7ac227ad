"""Prober thresholds and scheduling (pure logic: a scripted runner and a fake clock)."""

from __future__ import annotations

from corral.model.group import Probe
from corral.node.probes import Prober


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _prober(results: list[bool]) -> tuple[Prober, Clock, list[str]]:
    clock, calls = Clock(), []

    def run(probe: Probe, cid: str, ip: str | None) -> tuple[bool, str]:
        calls.append(cid)
        ok = results.pop(0)
        return ok, "fine" if ok else "broken"

    return Prober(run, clock), clock, calls


def test_initial_delay_and_period_are_respected() -> None:
    probe = Probe.model_validate({"exec": {"command": ["true"]}, "initialDelaySeconds": 5, "periodSeconds": 2})
    prober, clock, calls = _prober([True, True])
    step = prober.step("c", "liveness", probe, "run1", "cid", None)
    assert calls == [] and step.next_in == 5 and step.verdict is None
    clock.t += 5
    assert prober.step("c", "liveness", probe, "run1", "cid", None).verdict is True
    clock.t += 1
    assert prober.step("c", "liveness", probe, "run1", "cid", None).next_in == 1 and len(calls) == 1
    clock.t += 1
    prober.step("c", "liveness", probe, "run1", "cid", None)
    assert len(calls) == 2


def test_thresholds_count_consecutive_results() -> None:
    probe = Probe.model_validate({"httpGet": {"port": 80}, "periodSeconds": 1, "successThreshold": 2,
                                  "failureThreshold": 3})
    prober, clock, _ = _prober([True, False, True, True, False, False, False])
    verdicts = []
    for _ in range(7):
        step = prober.step("c", "readiness", probe, "run1", "cid", "10.0.0.2")
        verdicts.append((step.verdict, step.failure))
        clock.t += 1
    assert [v for v, _ in verdicts] == [None, None, None, True, True, True, False]
    assert verdicts[1][1] == "broken" and verdicts[0][1] is None


def test_a_new_run_of_the_container_starts_counting_afresh() -> None:
    probe = Probe.model_validate({"exec": {"command": ["x"]}, "periodSeconds": 1, "failureThreshold": 1,
                                  "initialDelaySeconds": 3})
    prober, clock, calls = _prober([False])
    prober.step("c", "liveness", probe, "run1", "cid", None)
    clock.t += 3
    assert prober.step("c", "liveness", probe, "run1", "cid", None).verdict is False
    step = prober.step("c", "liveness", probe, "run2", "cid", None)
    assert step.verdict is None and step.next_in == 3 and len(calls) == 1
