"""Test helper: a cluster on one machine. Hosts are network namespaces on a fabric; each runs a `corral agent`.

Layout (names carry the prefix ``ccl``; addresses are 10.213.200.0/24, the vnets 10.213.0.0/17):

    root namespace   veth ccl-up 10.213.200.254  -- the servers (`corral server`) and the registry listen here
    netns ccl-fab    bridge cclfab0: ccl-upf and one cclf-hN per host
    netns ccl-hN     veth fab 10.213.200.N; its agent runs in it (nsenter --net), with its own data dir,
                     cgroup parent /ccl-hN and network-namespace prefix cclN-

Cutting a host's link (``cut``) takes its fabric veth down: the agent and its containers stay
alive but reach neither the servers nor the other hosts. ``close()`` removes everything, even
after a failed test: agents and watchdogs, what each agent made (``corral node reset`` in its
namespace), servers, registry, namespaces and cgroups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from ports import free_port

from corral.cli.client import Client
from corral.config import ClientConfig
from corral.node.fence import kill_tree

VENV_BIN = Path(sys.executable).parent
CORRAL = str(VENV_BIN / "corral")
FABRIC = "ccl-fab"
BRIDGE = "cclfab0"
NET = "10.213.200"
UPLINK = f"{NET}.254"
VNET_SPACE = "10.213.0.0/17"


def trust(ca: Path | str | None) -> ssl.SSLContext:
    """An SSL context trusting ``ca`` (httpx wants contexts, not paths)."""
    return ssl.create_default_context(cafile=str(ca))


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line names ``text`` (a path unique to this test)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (d / "cmdline").read_bytes():
                out.append(int(d.name))
    return out


def _kill(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


@dataclass
class Host:
    n: int
    root: Path
    zone: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    # What its agent offers (`--cpu`, `--memory`; None: the whole machine, as each agent would say).
    cpu: float | None = None
    memory: float | None = None
    extra: list[str] = field(default_factory=list)  # more `corral agent` flags (kept for a restart)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"ccl-h{self.n}"

    @property
    def netns(self) -> str:
        return f"ccl-h{self.n}"

    @property
    def ip(self) -> str:
        return f"{NET}.{self.n}"

    @property
    def data_dir(self) -> Path:
        return self.root / self.name

    @property
    def cgroup_parent(self) -> str:
        return f"/ccl-h{self.n}"

    @property
    def netns_prefix(self) -> str:
        return f"ccl{self.n}-"

    def in_netns(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", "--", *argv]


@dataclass
class Server:
    name: str
    root: Path
    store: str
    port: int = field(default_factory=lambda: free_port(UPLINK))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://{UPLINK}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"


class ClusterFabric:
    def __init__(self, root: Path, hosts: int = 3) -> None:
        self.root = root
        self.hosts = [Host(n, root) for n in range(1, hosts + 1)]
        self.servers: list[Server] = []
        self.namespaces: list[str] = []
        self.env = dict(os.environ)

    # the fabric ----------------------------------------------------------------
    def build(self) -> None:
        self.cleanup_network()  # what a killed earlier run may have left
        self._netns(FABRIC)
        self._in(FABRIC, "ip", "link", "add", BRIDGE, "type", "bridge")
        self._in(FABRIC, "ip", "link", "set", BRIDGE, "up")
        sh("ip", "link", "add", "ccl-up", "type", "veth", "peer", "name", "ccl-upf", "netns", FABRIC)
        sh("ip", "addr", "add", f"{UPLINK}/24", "dev", "ccl-up")
        sh("ip", "link", "set", "ccl-up", "up")
        self._in(FABRIC, "ip", "link", "set", "ccl-upf", "master", BRIDGE, "up")
        for h in self.hosts:
            self._netns(h.netns)
            sh("ip", "link", "add", f"cclf-h{h.n}", "type", "veth", "peer", "name", "fab", "netns", h.netns)
            sh("ip", "link", "set", f"cclf-h{h.n}", "netns", FABRIC)
            self._in(FABRIC, "ip", "link", "set", f"cclf-h{h.n}", "master", BRIDGE, "up")
            self._in(h.netns, "ip", "addr", "add", f"{h.ip}/24", "dev", "fab")
            self._in(h.netns, "ip", "link", "set", "fab", "up")
            # The registry and servers are reached over the fabric; nothing else leaves it.
            self._in(h.netns, "ip", "route", "add", "default", "via", UPLINK)

    def _netns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        self._in(name, "ip", "link", "set", "lo", "up")

    @staticmethod
    def _in(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *argv)

    def cut(self, host: Host) -> None:
        """Take the host's fabric link down: it reaches no server and no other host; everything on it keeps running."""
        self._in(FABRIC, "ip", "link", "set", f"cclf-h{host.n}", "down")

    def heal(self, host: Host) -> None:
        self._in(FABRIC, "ip", "link", "set", f"cclf-h{host.n}", "up")

    # servers -----------------------------------------------------------------
    def start_server(self, name: str, store: str) -> Server:
        """Start (or start again, with its data) the server ``name``."""
        srv = next((s for s in self.servers if s.name == name), None) or Server(
            name=name, root=self.root / f"server-{name}", store=store)
        srv.root.mkdir(parents=True, exist_ok=True)
        log = open(srv.root / "server.log", "ab")
        env = {**self.env, "CORRAL_CONFIG": str(srv.config_path)}
        srv.proc = subprocess.Popen(
            [CORRAL, "server", "--store", store, "--listen", f"{UPLINK}:{srv.port}", "--data-dir", str(srv.root),
             "--name", name, "--subnet", VNET_SPACE, "-v"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        if srv not in self.servers:
            self.servers.append(srv)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if srv.proc.poll() is not None:
                raise RuntimeError(f"corral server exited: {(srv.root / 'server.log').read_text()[-3000:]}")
            if srv.config_path.exists() and (srv.root / "join-token").exists():
                try:
                    httpx.get(f"{srv.url}/healthz", verify=trust(srv.root / "tls" / "ca.pem"), timeout=1)
                    return srv
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("corral server did not become ready in 30 s")

    @property
    def join_token(self) -> str:
        return (self.servers[0].root / "join-token").read_text().strip()

    def client(self, server: Server | None = None) -> Client:
        """A client of ``server`` (default: the first one that runs)."""
        srv = server or next(s for s in self.servers if s.proc is not None and s.proc.poll() is None)
        return Client(ClientConfig.load(srv.config_path))

    def leader(self, store_url: str) -> Server:
        """The server holding the controllers' lease now (read from the servers' etcd, as they elect)."""
        from corral.control.election import LEADER_KEY
        from corral.store.open import open_store

        store = open_store(store_url)
        try:
            rec = store.get(LEADER_KEY)
        finally:
            store.close()
        assert rec is not None, "no leader"
        name = str(rec.value["holder"]).split("/", 1)[0]
        return next(s for s in self.servers if s.name == name)

    def kill_server(self, srv: Server) -> None:
        if srv.proc and srv.proc.poll() is None:
            os.killpg(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(10)

    # agents ----------------------------------------------------------------------
    def start_agent(self, host: Host, servers: list[Server] | None = None, wait: bool = True,
                    extra: list[str] | None = None) -> None:
        urls = ",".join(s.url for s in (servers or self.servers))
        host.extra = list(extra if extra is not None else host.extra)
        host.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(host.data_dir.parent / f"{host.name}.log", "ab")
        argv = [CORRAL, "agent", "--server", urls, "--join-token", self.join_token, "--name", host.name,
                "--data-dir", str(host.data_dir), "--public-ip", host.ip, "--cgroup-parent", host.cgroup_parent,
                "--netns-prefix", host.netns_prefix, "--pool-size", "0", "-v"]
        if host.zone:
            argv += ["--zone", host.zone]
        if host.labels:
            argv += ["--labels", ",".join(f"{k}={v}" for k, v in host.labels.items())]
        if host.cpu is not None:
            argv += ["--cpu", str(host.cpu)]
        if host.memory is not None:
            argv += ["--memory", str(host.memory)]
        argv += host.extra
        host.proc = subprocess.Popen(host.in_netns(*argv), env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if wait:
            self.wait_node(host, "Ready")

    def node(self, host: Host) -> dict[str, Any]:
        return self.client().request("GET", f"/providers/Corral/nodes/{host.name}").json()

    def placement(self) -> dict[str, str]:
        """group name -> the node it is bound to (from the nodes API)."""
        client, out = self.client(), {}
        for n in client.request("GET", "/providers/Corral/nodes").json()["value"]:
            for g in client.request("GET", f"/providers/Corral/nodes/{n['name']}").json()["properties"]["groups"]:
                out[g["name"]] = n["name"]
        return out

    def wait_node(self, host: Host, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if host.proc is not None and host.proc.poll() is not None and status == "Ready":
                raise RuntimeError(f"agent {host.name} exited: {self.agent_log(host)[-3000:]}")
            try:
                if self.node(host)["properties"]["status"] == status:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node {host.name} is not {status} after {timeout} s")
            time.sleep(0.1)

    def agent_log(self, host: Host) -> str:
        p = host.data_dir.parent / f"{host.name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def crash(self, host: Host) -> None:
        """The machine dies: SIGKILL its agent, watchdog, conmons and every process of its groups."""
        _kill(_pids_mentioning(str(host.data_dir)))
        kill_tree(host.cgroup_parent)
        if host.proc is not None:
            host.proc.wait(10)

    def stop_agent(self, host: Host) -> None:
        if host.proc is not None and host.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(host.proc.pid, signal.SIGTERM)
            try:
                host.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(host.proc.pid, signal.SIGKILL)
                host.proc.wait(10)

    def running_copies(self, uid: str) -> list[str]:
        """The hosts where a process of group ``uid`` runs now (read from their cgroups)."""
        out = []
        for h in self.hosts:
            top = Path("/sys/fs/cgroup/pids") / h.cgroup_parent.strip("/") / uid
            if top.is_dir() and any(p.read_text().split() for p in top.rglob("cgroup.procs")):
                out.append(h.name)
        return out

    def running_groups(self) -> dict[str, list[str]]:
        """uid -> the hosts where a process of that group runs now, for every group on the hosts."""
        copies: dict[str, list[str]] = {}
        for h in self.hosts:
            top = Path("/sys/fs/cgroup/pids") / h.cgroup_parent.strip("/")
            for d in (p for p in top.iterdir() if p.is_dir()) if top.is_dir() else []:
                if any(c.read_text().split() for c in d.rglob("cgroup.procs")):
                    copies.setdefault(d.name, []).append(h.name)
        return copies

    # clean-up ---------------------------------------------------------------------
    def close(self) -> None:
        def clear(h: Host) -> None:
            with contextlib.suppress(Exception):
                self.stop_agent(h)
            _kill(_pids_mentioning(str(h.data_dir)))  # watchdog, conmons, FUSE clients of shares
            kill_tree(h.cgroup_parent)
            shares = h.data_dir / "shares"
            if os.path.ismount(shares):
                sh("umount", "-l", str(shares), check=False)
            if (Path("/var/run/netns") / h.netns).exists() and self._left_on(h):
                sh(*h.in_netns(CORRAL, "node", "reset", "--data-dir", str(h.data_dir), "--cgroup-parent",
                               h.cgroup_parent, "--netns-prefix", h.netns_prefix), check=False)

        workers = [threading.Thread(target=clear, args=(h,)) for h in self.hosts]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        for srv in self.servers:
            if srv.proc and srv.proc.poll() is None:
                os.killpg(srv.proc.pid, signal.SIGTERM)
                try:
                    srv.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.kill_server(srv)
        self.cleanup_network()

    def _left_on(self, h: Host) -> bool:
        """Whether the host's agent left groups behind (a failed test): sandboxes, mounts, group cgroups."""
        if list(Path("/var/run/netns").glob(f"{h.netns_prefix}*")):
            return True
        with open("/proc/mounts") as f:
            if any(str(h.data_dir) in line for line in f):
                return True
        top = Path("/sys/fs/cgroup/pids") / h.cgroup_parent.strip("/")
        return top.is_dir() and any(p.is_dir() for p in top.iterdir())

    def cleanup_network(self) -> None:
        for ns in Path("/var/run/netns").glob("ccl*") if Path("/var/run/netns").is_dir() else []:
            sh("ip", "netns", "del", ns.name, check=False)
        sh("ip", "link", "del", "ccl-up", check=False)
        for h in self.hosts:
            for hierarchy in Path("/sys/fs/cgroup").iterdir():
                d = hierarchy / h.cgroup_parent.strip("/")
                if d.is_dir():
                    for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                        if sub.is_dir():
                            with contextlib.suppress(OSError):
                                sub.rmdir()
                    with contextlib.suppress(OSError):
                        d.rmdir()

    def leftovers(self) -> list[str]:
        """What of this cluster is still on the machine (should be nothing after ``close``)."""
        out = [f"netns {ns.name}" for ns in Path("/var/run/netns").glob("ccl*")] if Path("/var/run/netns").is_dir() \
            else []
        out += [f"link {ln}" for ln in sh("ip", "-o", "link").stdout.split("\n") if ": ccl" in ln]
        for h in self.hosts:
            out += [f"process {pid}" for pid in _pids_mentioning(str(h.data_dir))]
            if (Path("/sys/fs/cgroup/pids") / h.cgroup_parent.strip("/")).exists():
                out.append(f"cgroup {h.cgroup_parent}")
        with open("/proc/mounts") as f:
            out += [f"mount {line.split()[1]}" for line in f if str(self.root) in line]
        return out


def eventually(fn: Callable[[], Any], timeout: float = 30, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
            if last:
                return last
        except AssertionError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or fn}: last {last!r}")
        time.sleep(interval)


class OverlapWatch:
    """Samples, every ``every`` seconds, on how many hosts each group (name -> uid) has a process: the most
    seen per group, and the longest stretch during which one group ran on two hosts at once."""

    def __init__(self, fab: ClusterFabric, uids: dict[str, str], every: float = 0.05) -> None:
        self.fab, self.uids, self.every = fab, uids, every
        self.most: dict[str, int] = dict.fromkeys(uids, 0)
        self.longest = 0.0
        self._since: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OverlapWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            now = time.monotonic()
            for name, uid in self.uids.items():
                copies = len(self.fab.running_copies(uid))
                self.most[name] = max(self.most[name], copies)
                if copies > 1:
                    self._since.setdefault(name, now)
                    self.longest = max(self.longest, now - self._since[name])
                else:
                    self._since.pop(name, None)
