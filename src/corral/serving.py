"""Serving an ASGI app with uvicorn, as the server, `corral up` and a remote agent's node API all do."""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable

import anyio
import uvicorn

# Listen addresses that mean "every address": not one a client can be told to connect to.
WILDCARDS = ("0.0.0.0", "::", "")
_limiter: anyio.CapacityLimiter | None = None


def stream_threads() -> anyio.CapacityLimiter:
    """Threads for long-lived streams and long polls, apart from the pool the sync routes use, so they cannot
    starve it."""
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(512)
    return _limiter


def side_by_side(*parts: Callable[[], None]) -> None:
    """Run the stop functions of a process's parts at once and wait for all: each may wait out a poll."""
    threads = [threading.Thread(target=fn) for fn in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def run_api(app: object, host: str, port: int, ready: threading.Event | None = None,
            on_server: Callable[[uvicorn.Server], None] | None = None, **ssl: object) -> None:
    """Serve ``app`` with uvicorn until told to exit; ``ready`` is set once it listens."""
    # Open streams (log follow, events) must not hold a shutdown up for long.
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2,
                            **ssl)  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    if on_server is not None:
        on_server(server)
    def started() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.02)
        settle_heap()
        if ready is not None:
            ready.set()

    threading.Thread(target=started, daemon=True).start()
    server.run()


def settle_heap() -> None:
    """Keep what start-up made (modules, the app, models: ~125k objects) out of the cyclic collector.

    It lives as long as the process, yet every full collection walked it all with every thread
    stopped (~80 ms here): a start or a request that met one took that much longer. Collected
    first, so no start-up garbage is kept for ever.
    """
    gc.collect()
    gc.freeze()
