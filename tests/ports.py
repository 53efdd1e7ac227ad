"""Free ports for the services tests start (servers, etcd members, registries, DNS).

A port the kernel picked for a bind to port 0 and that was then closed can be picked again, for
another process's bind or outgoing connection, before the service binds it. Ports here come from
below the kernel's ephemeral range, where it never picks, at random (several checkouts may run
tests at once), each handed out once per process, and free for both TCP and UDP when handed out."""

from __future__ import annotations

import random
import socket

RANGE = range(25000, 32000)  # ip_local_port_range starts at 32768; glusterd takes 24007
_handed_out: set[tuple[str, int]] = set()


def _free(host: str, port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    for _ in range(1000):
        port = random.choice(RANGE)
        if (host, port) not in _handed_out and _free(host, port):
            _handed_out.add((host, port))
            return port
    raise RuntimeError(f"no free port on {host} in {RANGE.start}-{RANGE.stop - 1}")
