"""Podman runs a container on a corral-vnet network, the executable handing its calls to the node service.

Podman (Debian's 4.3, CNI backend) runs in a throw-away "host" network namespace
(from a thread that joined it), beside a network service started there, so the
bridge and iptables rules it makes stay out of the real host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from podman_support import PODMAN_CONF

from corral.net.vnet import netops, plugin
from corral.net.vnet.install import install_executable
from corral.net.vnet.service import CniService

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("podman") or not Path("/bin/busybox").exists(),
                       reason="needs root, podman and busybox-static"),
]

HOST = "cspod-h"
HOST_PATH = f"/var/run/netns/{HOST}"
NET = "cspodnet"

CONTAINERS_CONF = PODMAN_CONF + """[network]
network_backend = "cni"
network_config_dir = "{confdir}"
cni_plugin_dirs = ["{bindir}"]
"""


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[dict[str, Any]]:
    short = Path(tempfile.mkdtemp(prefix="cspod-"))  # podman wants its runroot under 50 characters
    subprocess.run(["ip", "netns", "add", HOST], check=True)
    service = CniService(str(tmp_path / "vnet.sock"))
    base: list[str] = []
    env: dict[str, str] = {}
    vnet = {"type": "corral-vnet", "bridge": "cspod0", "dataDir": str(tmp_path / "vnet"),
            "serviceSocket": service.path,
            "ipam": {"subnet": "10.199.112.0/20", "nodeBlock": "10.199.113.0/24"}}
    try:
        netops.in_netns(HOST_PATH, lambda: subprocess.run(["ip", "link", "set", "lo", "up"], check=True))
        assert netops.in_netns(HOST_PATH, service.start)
        bindir, confdir, rootfs = tmp_path / "cni-bin", tmp_path / "cni-conf", tmp_path / "rootfs"
        for d in (bindir, confdir, rootfs / "bin"):
            d.mkdir(parents=True)
        install_executable(bindir / "corral-vnet")
        for p in Path("/usr/lib/cni").iterdir():
            (bindir / p.name).symlink_to(p)
        (confdir / f"{NET}.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": NET,
            "plugins": [vnet, {"type": "portmap", "capabilities": {"portMappings": True}}]}))
        shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
        (tmp_path / "containers.conf").write_text(CONTAINERS_CONF.format(confdir=confdir, bindir=bindir))
        env = {**os.environ, "CONTAINERS_CONF": str(tmp_path / "containers.conf")}
        base = ["podman", "--root", str(tmp_path / "root"), "--runroot", str(short / "run")]
        yield {"base": base, "env": env, "rootfs": rootfs, "service": service, "vnet": vnet}
    finally:
        if base:
            subprocess.run([*base, "system", "reset", "--force"], env=env, capture_output=True)
        service.stop()
        try:
            conf = plugin.parse_conf({"cniVersion": "1.0.0", "name": NET, **vnet})
            netops.in_netns(HOST_PATH, lambda: plugin.teardown(conf))
        finally:
            subprocess.run(["ip", "netns", "del", HOST], check=False)
            shutil.rmtree(short, ignore_errors=True)


def test_podman_container_gets_a_vnet_address(podman: dict[str, Any]) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*podman["base"], "run", "--rm", "--network", NET, "--rootfs", str(podman["rootfs"]),
             "/bin/busybox", "ip", "-4", "-o", "addr", "show", "eth0"],
            env=podman["env"], capture_output=True, text=True, timeout=120)

    proc = netops.in_netns(HOST_PATH, run)
    assert proc.returncode == 0, proc.stderr
    assert "inet 10.199.113." in proc.stdout
    service = podman["service"]
    assert service.served >= 2 and service.declined == 0  # ADD and DEL (at least) done by the node service
    ipam = Path(podman["vnet"]["dataDir"]) / NET / "ipam" / "addr"
    assert list(ipam.iterdir()) == []  # `podman run --rm` gave the address back
