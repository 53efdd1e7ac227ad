"""Load-balancer health probes, from each node: a backend that fails its rule's probe gets no new connections.

Every node balances every frontend, so every node checks the backends itself (as each Azure host
does): a TCP probe connects to the backend's probe port, an HTTP(S) probe asks for ``path`` and wants
a 200. ``threshold`` consecutive results change a backend's health; a backend not yet checked counts
as healthy and is checked at once. A change calls ``on_change``, which rebuilds the node's rules.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from corral.model.lb import NodeLbProbe, NodeLbRule

log = logging.getLogger(__name__)
TICK = 0.5


def check(ip: str, probe: NodeLbProbe, source: str | None = None) -> bool:
    """``source``: the address to probe from (the node's gateway in the backend's network, which the
    backend's node admits, as it does the balanced connections themselves)."""
    src = (source, 0) if source else None
    try:
        if probe.protocol == "Tcp":
            with socket.create_connection((ip, probe.port), timeout=probe.timeout, source_address=src):
                return True
        conn: http.client.HTTPConnection
        if probe.protocol == "Https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # health, not identity
            conn = http.client.HTTPSConnection(ip, probe.port, timeout=probe.timeout, context=ctx, source_address=src)
        else:
            conn = http.client.HTTPConnection(ip, probe.port, timeout=probe.timeout, source_address=src)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "corral-lb-probe", "Connection": "close"})
            return conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return False


Target = tuple[str, str]  # (backend ip, the probe as JSON)


@dataclass
class _State:
    probe: NodeLbProbe
    source: str | None = None
    healthy: bool = True
    streak: int = 0  # consecutive results against the current health
    due: float = 0.0
    busy: bool = False


class BackendHealth:
    def __init__(self, on_change: Callable[[], None], run: Callable[[Callable[[], Any]], Any] | None = None) -> None:
        self.on_change = on_change
        self.run = run or (lambda fn: fn())  # where a check runs (the node's host netns)
        self._lock = threading.Lock()
        self._targets: dict[Target, _State] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lb-probe")

    def watch(self, rules: list[NodeLbRule]) -> None:
        """Check the backends of these rules (and stop checking the others)."""
        wanted = {(b.ip, r.probe.model_dump_json()): (r.probe, b.snat) for r in rules if r.probe for b in r.backends}
        with self._lock:
            for t in [t for t in self._targets if t not in wanted]:
                del self._targets[t]
            for t, (probe, source) in wanted.items():
                self._targets.setdefault(t, _State(probe=probe, source=source)).source = source
            start = bool(self._targets) and self._thread is None
        if start:
            self._thread = threading.Thread(target=self._run, name="lb-probes", daemon=True)
            self._thread.start()

    def healthy(self, ip: str, probe: NodeLbProbe | None) -> bool:
        if probe is None:
            return True
        with self._lock:
            st = self._targets.get((ip, probe.model_dump_json()))
        return st is None or st.healthy

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            now = time.monotonic()
            with self._lock:
                due = [(t, st) for t, st in self._targets.items() if not st.busy and st.due <= now]
                for _, st in due:
                    st.busy = True
            for t, st in due:
                self._pool.submit(self._check, t, st)

    def _check(self, target: Target, st: _State) -> None:
        ok = bool(self.run(lambda: check(target[0], st.probe, st.source)))
        changed = False
        with self._lock:
            st.busy = False
            st.due = time.monotonic() + st.probe.interval
            if ok == st.healthy:
                st.streak = 0
            else:
                st.streak += 1
                if st.streak >= st.probe.threshold:
                    st.healthy, st.streak, changed = ok, 0, self._targets.get(target) is st
        if changed:
            log.info("load-balancer backend %s is %s", target[0], "healthy" if ok else "failing its probe")
            try:
                self.on_change()
            except Exception:
                log.exception("could not apply the load balancers' rules after a probe changed")
