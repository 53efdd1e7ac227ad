"""Startup, liveness and readiness probes of a group's containers.

A ``Prober`` belongs to one group worker and is stepped from the worker's own
loop (no thread per probe): each step runs the probes that are due and says
how long until the next one. Results are counted against the probe's
``successThreshold`` / ``failureThreshold`` as Kubernetes does; the count
restarts whenever the container starts again (its ``epoch`` changes).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from corral.errors import CorralError, ExecTimeout
from corral.model.group import Probe
from corral.node.exec import exec_capture
from corral.node.runtime.runtime import Runtime

ProbeKind = Literal["startup", "liveness", "readiness"]
# (probe, container id, the group's IP) -> (succeeded, what happened)
ProbeRunner = Callable[[Probe, str, str | None], tuple[bool, str]]

OUTPUT_LIMIT = 200


def _clip(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return text if len(text) <= OUTPUT_LIMIT else "..." + text[-OUTPUT_LIMIT:]


def exec_probe(runtime: Runtime, probe: Probe, cid: str) -> tuple[bool, str]:
    assert probe.exec is not None
    try:
        code, out, err = exec_capture(runtime, cid, probe.exec.command, timeout=probe.timeoutSeconds)
    except ExecTimeout:
        return False, f"command {probe.exec.command[0]!r} timed out after {probe.timeoutSeconds}s"
    except CorralError as exc:
        return False, exc.message
    if code == 0:
        return True, "command succeeded"
    return False, f"command {probe.exec.command[0]!r} exited with {code}: {_clip(err or out)}"


def http_probe(probe: Probe, ip: str | None) -> tuple[bool, str]:
    """GET from the host to the group's address (the host reaches it over the node bridge)."""
    action = probe.httpGet
    assert action is not None
    if not ip:
        return False, "the group has no address yet"
    conn: http.client.HTTPConnection
    if action.scheme == "https":
        ctx = ssl.create_default_context()
        # Like kubelet: a probe checks health, not the certificate.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(ip, action.port, timeout=probe.timeoutSeconds, context=ctx)
    else:
        conn = http.client.HTTPConnection(ip, action.port, timeout=probe.timeoutSeconds)
    url = f"{action.scheme}://{ip}:{action.port}{action.path}"
    try:
        headers = {"User-Agent": "corral-probe/1.0", **{h.name: h.value for h in action.httpHeaders or []}}
        conn.request("GET", action.path or "/", headers=headers)
        resp = conn.getresponse()
        resp.read(4096)
    except (OSError, http.client.HTTPException) as exc:
        return False, f"GET {url}: {exc or type(exc).__name__}"
    finally:
        conn.close()
    if 200 <= resp.status < 400:
        return True, f"GET {url}: {resp.status}"
    return False, f"GET {url}: HTTP {resp.status}"


def tcp_probe(probe: Probe, ip: str | None) -> tuple[bool, str]:
    """Open (and close) a TCP connection from the host to the group's address, as kubelet does."""
    assert probe.tcpSocket is not None
    port = probe.tcpSocket.port
    if not ip:
        return False, "the group has no address yet"
    try:
        with socket.create_connection((ip, port), timeout=probe.timeoutSeconds):
            pass
    except OSError as exc:
        return False, f"dial tcp {ip}:{port}: {exc.strerror or exc or type(exc).__name__}"
    return True, f"connected to {ip}:{port}"


def runner_for(runtime: Runtime) -> ProbeRunner:
    def run(probe: Probe, cid: str, ip: str | None) -> tuple[bool, str]:
        if probe.exec is not None:
            return exec_probe(runtime, probe, cid)
        if probe.tcpSocket is not None:
            return tcp_probe(probe, ip)
        return http_probe(probe, ip)

    return run


@dataclass
class _Track:
    epoch: str  # which run of the container these counts are about
    next_at: float
    successes: int = 0
    failures: int = 0
    verdict: bool | None = None  # None until a threshold is reached


@dataclass
class ProbeStep:
    verdict: bool | None  # True healthy/ready, False failed past its threshold, None undecided
    failure: str | None  # the message of a probe that just failed
    next_in: float  # seconds until this probe is due again


class Prober:
    def __init__(self, runner: ProbeRunner, clock: Callable[[], float] = time.monotonic) -> None:
        self.runner = runner
        self.clock = clock
        self._tracks: dict[tuple[str, ProbeKind], _Track] = {}

    def step(self, name: str, kind: ProbeKind, probe: Probe, epoch: str, cid: str, ip: str | None) -> ProbeStep:
        """Run ``probe`` for container ``name`` if it is due; always says when it is due next."""
        now = self.clock()
        track = self._tracks.get((name, kind))
        if track is None or track.epoch != epoch:
            track = _Track(epoch=epoch, next_at=now + probe.initialDelaySeconds)
            self._tracks[(name, kind)] = track
        if now < track.next_at:
            return ProbeStep(track.verdict, None, track.next_at - now)
        ok, message = self.runner(probe, cid, ip)
        # The period counts from the end of this probe, so a slow probe never runs back to back.
        track.next_at = self.clock() + probe.periodSeconds
        failure = None
        if ok:
            track.successes += 1
            track.failures = 0
            if track.successes >= probe.successThreshold:
                track.verdict = True
        else:
            track.failures += 1
            track.successes = 0
            failure = message
            if track.failures >= probe.failureThreshold:
                track.verdict = False
        return ProbeStep(track.verdict, failure, probe.periodSeconds)

    def reset(self, name: str, kind: ProbeKind) -> None:
        self._tracks.pop((name, kind), None)

    def forget(self, keep: set[str]) -> None:
        """Drop the counts of containers no longer probed."""
        for key in [k for k in self._tracks if k[0] not in keep]:
            del self._tracks[key]
