"""Test helper: run Debian's `docker-registry` on 127.0.0.1 for the length of a `with` block.

    with run_registry(tmp_path) as reg:                     # anonymous
        ...reg.host_port, reg.url
    with run_registry(tmp_path, users={"u": "p"}) as reg:   # htpasswd basic auth (bcrypt hashes)

The registry's storage, config and log live under tmp_path/registry-<port>/; the
process is stopped (and killed if it must be) when the block exits, even on error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
PORT_RANGE = range(5100, 5200)


@dataclass(frozen=True)
class RegistryInfo:
    host_port: str  # "127.0.0.1:PORT", the registry part of image references
    url: str  # "http://127.0.0.1:PORT"
    root: Path  # storage, config.yml and registry.log live here
    users: dict[str, str]


def _free_port() -> int:
    # Prefer the range set aside for registries; fall back to a port the OS picks.
    for port in PORT_RANGE:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _htpasswd(path: Path, users: dict[str, str]) -> None:
    import bcrypt  # the registry's htpasswd backend accepts bcrypt hashes only

    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")


def _config(root: Path, port: int, users: dict[str, str] | None) -> str:
    text = (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    if users:
        _htpasswd(root / "htpasswd", users)
        text += f"auth:\n  htpasswd:\n    realm: corral-test\n    path: {root / 'htpasswd'}\n"
    return text


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v2/", timeout=1.0).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry at {url} did not become ready: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def run_registry(tmp_path: Path, users: dict[str, str] | None = None) -> Iterator[RegistryInfo]:
    for _attempt in range(5):  # another process may grab the port between probe and bind
        port = _free_port()
        root = Path(tmp_path) / f"registry-{port}"
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.yml").write_text(_config(root, port, users))
        log = root / "registry.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            try:
                _wait_ready(proc, url, log)
            except RuntimeError:
                if proc.poll() is not None and "address already in use" in log.read_text():
                    continue
                raise
            yield RegistryInfo(host_port=f"127.0.0.1:{port}", url=url, root=root, users=dict(users or {}))
            return
        finally:
            _stop(proc)
    raise RuntimeError("could not find a free port for docker-registry")
