"""A real kubectl drives the virtual node's kubelet API over SPDY/3.1, against a real Corral group.

Current API servers talk SPDY/3.1 to kubelets for exec, attach and port-forward (they translate
kubectl's websockets), and kubectl up to 1.29 speaks it itself. No API server exists here, so
``kube_gateway`` stands in for its pod proxy: kubectl's ``/api/v1/namespaces/NS/pods/NAME/exec`` (and
``attach``, ``portforward``) become the kubelet's ``/exec/NS/NAME/CONTAINER`` (``/portForward/NS/NAME``),
relayed byte for byte. kubectl is forced to SPDY with its own switches
(``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``, ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``); one exec runs
with kubectl's default protocol too (websockets from 1.30 on).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import shutil
import struct
import termios
from pathlib import Path
from typing import Any

import httpx
import pytest
from corral_server import CorralServer, free_port
from kube_gateway import KubeGateway
from kube_support import PodApi, Tokens, condition, wait, web_pod

from corral.api.tls import ensure_certificates
from corral.kube.corral_api import CorralApi
from corral.kube.kubelet import KubeletApi, serve
from corral.kube.mapping import MappingSettings, group_name
from corral.kube.metrics import PodMetrics
from corral.kube.pods import PodController

NODE = "it-kubectl-node"
RG = "kube-kc"
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl") or ""
SPDY = {"KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"}

pytestmark = pytest.mark.skipif(not KUBECTL, reason="needs kubectl (KUBECTL=/path or kubectl on PATH)")


@pytest.fixture
def rg() -> str:
    return RG


def test_kubectl_exec_tty_and_port_forward_over_spdy(corral: CorralServer, tmp_path: Path) -> None:
    asyncio.run(_scenario(corral, tmp_path))


async def _scenario(corral: CorralServer, tmp_path: Path) -> None:
    api = CorralApi(corral.config, RG)
    kube = PodApi()
    kube.add(web_pod("web", "uid-kc-1", NODE, crash=True, as_user=True))
    ctl = PodController(kube, api, MappingSettings(node_name=NODE, location=corral.config.location),  # type: ignore[arg-type]
                        host_ip="127.0.0.1")
    tasks = await ctl.start()
    _, cert, key = ensure_certificates(tmp_path / "tls", ["127.0.0.1"])
    port = free_port()
    kubelet = KubeletApi(api, Tokens(), NODE, lambda: list(kube.pods.values()), PodMetrics(api, NODE))
    tasks.append(asyncio.create_task(serve(kubelet, "127.0.0.1", port, str(cert), str(key), None)))
    gateway = KubeGateway(lambda: list(kube.pods.values()), ("127.0.0.1", port), str(tmp_path / "tls" / "ca.pem"),
                          "alice-token")
    await gateway.start()
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps(gateway.kubeconfig()))
    kubectl = Kubectl(config, tmp_path)
    try:
        pod = kube.pods[("default", "web")]
        await wait(lambda: condition(pod, "Ready") == "True", what="the pod Ready")

        # exec without a terminal: separate stdout and stderr, the exit code as kubectl's own
        rc, out, err = await kubectl.run("exec", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
        assert (rc, out) == (3, "out\n"), (rc, out, err)
        assert "err\n" in err and "command terminated with exit code 3" in err
        # the pod runs as user 1000: its downwardAPI file is the fsGroup's (mode 0440), and the process is in it
        rc, out, err = await kubectl.run("exec", "web", "--", "sh", "-c",
                                         "id -u; id -G; stat -c '%a %g' /etc/podinfo/name; cat /etc/podinfo/name")
        uid, gids, mode, name = out.splitlines()
        assert (rc, uid, mode, name) == (0, "1000", "440 2000", "web") and "2000" in gids.split(), (out, err)
        # a terminal of the size of kubectl's own (the resize stream), and its exit code. (The short sleep:
        # Corral sizes a crun exec's terminal just after the command starts.)
        rc, out = await kubectl.tty(33, 101, "exec", "-it", "web", "--", "sh", "-c",
                                    "sleep 0.2; stty size; tty; exit 7")
        assert rc == 7 and "33 101" in out and "/dev/pts/" in out, (rc, out)
        # stdin reaches the command
        rc, out, err = await kubectl.run("exec", "-i", "web", "--", "sh", "-c", "read line; echo got:$line",
                                         stdin=b"hello\n")
        assert rc == 0 and "got:hello" in out, (rc, out, err)
        assert set(gateway.upgrades) == {"SPDY/3.1"}, gateway.upgrades

        # port-forward: two connections over one SPDY connection, each an HTTP exchange with busybox httpd
        await _port_forward(kubectl, SPDY)
        assert gateway.upgrades[-1] == "SPDY/3.1"

        # logs of the container's current run, and with --previous of the run before (the crash container
        # counts its runs and exits every few seconds)
        def crash() -> Any:
            return next(c for c in pod.status.containerStatuses if c.name == "crash")  # type: ignore[union-attr]
        for _ in range(3):
            await wait(lambda: crash().restartCount >= 1 and crash().state.running is not None, 60,
                       "the crash container's restart")
            n = crash().restartCount
            _, current, _ = await kubectl.run("logs", "web", "-c", "crash")
            _, previous, _ = await kubectl.run("logs", "web", "-c", "crash", "--previous")
            if crash().restartCount == n and crash().state.running is not None:
                break
        assert (current, previous) == (f"run {n}\n", f"run {n - 1}\n"), (n, current, previous)
        rc, _, err = await kubectl.run("logs", "web", "-c", "web", "--previous")
        assert rc != 0 and 'previous terminated container "web" in pod "web" not found' in err, err

        # kubectl's default protocols (websockets from 1.30 on, port-forward as SPDY inside a websocket from
        # 1.31; the gateway says it is a 1.33 API server, so gcloud's kubectl dispatcher runs kubectl 1.33)
        rc, _, err = await kubectl.run("exec", "web", "--", "sh", "-c", "exit 4", spdy=False)
        assert rc == 4 and "command terminated with exit code 4" in err, (rc, err)
        await _port_forward(kubectl, {})
        assert gateway.upgrades[-2] in ("websocket", "SPDY/3.1") and gateway.upgrades[-1] in ("websocket", "SPDY/3.1")
    finally:
        await gateway.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            await api.delete_group(group_name("default", "web"))
        except Exception:
            pass
        await api.close()


async def _port_forward(kubectl: Kubectl, env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        KUBECTL, f"--kubeconfig={kubectl.config}", "port-forward", "pod/web", ":8080", env=kubectl.env(env),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        local = int(re.search(r"127\.0\.0\.1:(\d+) -> 8080", line)[1])  # type: ignore[index]
        async with httpx.AsyncClient(timeout=15) as http:
            for _ in range(2):
                got = await http.get(f"http://127.0.0.1:{local}/etc/hostname")
                assert got.status_code == 200 and got.text.strip()
    finally:
        proc.terminate()
        await proc.wait()


class Kubectl:
    def __init__(self, config: Path, home: Path) -> None:
        self.config, self.home = config, home

    def env(self, extra: dict[str, str]) -> dict[str, str]:
        return {**os.environ, "HOME": str(self.home), "KUBECACHEDIR": str(self.home / "cache"), **extra}

    async def run(self, *args: str, stdin: bytes | None = None, spdy: bool = True) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, f"--kubeconfig={self.config}", *args, env=self.env(SPDY if spdy else {}),
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    async def tty(self, rows: int, cols: int, *args: str) -> tuple[int, str]:
        """kubectl on a terminal of its own (rows x cols), as a user types it; its exit code and screen."""
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        proc = await asyncio.create_subprocess_exec(
            KUBECTL, f"--kubeconfig={self.config}", *args, env=self.env(SPDY),
            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
        os.close(slave)
        screen = bytearray()
        loop = asyncio.get_running_loop()

        def read() -> bytes:
            try:
                return os.read(master, 65536)
            except OSError:  # EIO once kubectl and its terminal are gone
                return b""
        try:
            while chunk := await asyncio.wait_for(loop.run_in_executor(None, read), 60):
                screen += chunk
            return await asyncio.wait_for(proc.wait(), 30), screen.decode(errors="replace")
        finally:
            os.close(master)
