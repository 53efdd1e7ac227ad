"""Test helper: a real `corral up` process on loopback, with its own data dir, bridge and cgroup parent.

Everything it creates is removed when the helper is closed, even when a test failed:
groups are deleted through the API, then the server stops, then `corral node reset`
removes whatever a crashed test may have left on the host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from ports import free_port

from corral.cli.client import Client
from corral.config import ClientConfig

VENV_BIN = Path(sys.executable).parent
CORRAL = str(VENV_BIN / "corral")


# Several checkouts may run their tests on one machine at once: CORRAL_TEST_SLOT=N (1-9) moves the
# shared server's bridge, address space and cgroup parent out of the other slots' way.
SLOT = int(os.environ.get("CORRAL_TEST_SLOT", "0"))
DEFAULT_BRIDGE = f"ctest{SLOT}" if SLOT else "ctest0"
DEFAULT_SUBNET = f"10.{100 + SLOT}.0.0/16" if SLOT else "10.66.0.0/16"
DEFAULT_CGROUP_PARENT = f"/corral-test{SLOT}" if SLOT else "/corral-test"


class CorralServer:
    def __init__(self, root: Path, bridge: str = DEFAULT_BRIDGE, subnet: str = DEFAULT_SUBNET,
                 cgroup_parent: str = DEFAULT_CGROUP_PARENT, extra: list[str] | None = None) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.config_path = root / "config.json"
        self.port = free_port()
        self.bridge, self.subnet, self.cgroup_parent = bridge, subnet, cgroup_parent
        self.extra = list(extra or [])
        if "--dns-listen" not in self.extra:  # several servers may run at once: no fixed port
            self.extra += ["--dns-listen", "127.0.0.1:0"]
        self.proc: subprocess.Popen[bytes] | None = None
        # Its own corral-vnet network service socket, not the machine's default.
        self.env = {**os.environ, "CORRAL_CONFIG": str(self.config_path), "CORRAL_VNET_SOCKET": str(root / "vnet.sock")}

    @property
    def node_flags(self) -> list[str]:
        return ["--data-dir", str(self.data_dir), "--bridge", self.bridge, "--subnet", self.subnet,
                "--cgroup-parent", self.cgroup_parent]

    def build_base_image(self) -> None:
        subprocess.run([CORRAL, "image", "build-base", "--data-dir", str(self.data_dir)], check=True,
                       env=self.env, capture_output=True)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.unlink(missing_ok=True)
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [CORRAL, "up", *self.node_flags, "--listen", f"127.0.0.1:{self.port}", *self.extra],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"corral up exited: {(self.root / 'server.log').read_text()[-2000:]}")
            if self.config_path.exists():
                try:
                    cfg = self.config
                    verify = ssl.create_default_context(cafile=cfg.ca_cert) if cfg.ca_cert else True
                    httpx.get(f"{cfg.endpoint}/healthz", verify=verify, timeout=1)
                    return
                except (httpx.HTTPError, ValueError, OSError):  # OSError: the CA file not written yet
                    pass
            time.sleep(0.05)
        raise RuntimeError("corral up did not become ready in 30 s")

    @property
    def config(self) -> ClientConfig:
        return ClientConfig.load(self.config_path)

    def client(self) -> Client:
        return Client(self.config)

    def kill(self) -> None:
        """SIGKILL the server (control plane and agent), as a crash would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([CORRAL, *args], env=self.env, capture_output=True, text=True, timeout=180)
        if check and res.returncode != 0:
            raise AssertionError(f"corral {' '.join(args)} failed ({res.returncode}): {res.stdout}\n{res.stderr}")
        return res

    def delete_all_groups(self) -> None:
        client = self.client()
        path = f"/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/containerGroups"
        for g in client.request("GET", path).json()["value"]:
            rg = g["id"].split("/")[4]
            resp = client.request("DELETE", client.group_path(rg, g["name"]))
            if resp.status_code == 202:
                client.wait_operation(resp, timeout=60)

    def close(self) -> None:
        try:
            if self.proc and self.proc.poll() is None:
                self.delete_all_groups()
        finally:
            self.stop()
            subprocess.run([CORRAL, "node", "reset", *self.node_flags], env=self.env, capture_output=True)


@contextlib.contextmanager
def running_corral(root: Path, env: dict[str, str] | None = None, **kwargs: Any) -> Iterator[CorralServer]:
    """A started CorralServer with the base image cached, closed (and its host traces removed) on exit.

    ``env``: extra environment for the server and its CLI calls.
    """
    server = CorralServer(root, **kwargs)
    server.env.update(env or {})
    try:
        server.build_base_image()
        server.start()
        yield server
    finally:
        server.close()
