"""Test helper: real etcd (Debian's etcd-server 3.4) members on free loopback ports.

    with run_etcd(tmp_path) as etcd:                 # one member
        store = open_store(etcd.url("/t1"))           # etcd://127.0.0.1:P/t1 (a namespace of its own)
    with run_etcd(tmp_path, members=3) as etcd:      # a three-member cluster
        etcd.kill(0)                                  # SIGKILL member 0 (etcd.stop(0): SIGTERM)
        etcd.start(0)                                 # back, with its data
        etcd.endpoints                                # ["http://127.0.0.1:P0", ...]
    with run_etcd(tmp_path, tls=True) as etcd:       # client TLS with client-certificate auth: url() carries
        etcd.tls                                      # ?cacert=&cert=&key= (TlsFiles: the CA, the client's pair)

Fixtures (this module is a pytest plugin, see conftest.py): ``etcd``, one member for the whole
session (give each test its own namespace: ``etcd.url(unique_namespace)``), ``etcd_tls``, one member
behind client TLS for the session, and ``etcd_namespace``, such a namespace. Data and logs live
under the tmp dir given (etcd-<port>/<member>/); every member is killed and its data removed when the
block exits, even on error.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ports import free_port
from pydantic import BaseModel

from corral import pki
from corral.store.etcdclient import tls_context

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"


class TlsFiles(BaseModel):
    """A CA, the members' certificate (server and client use: etcd's gateway presents it to its own gRPC
    server), and a client's certificate, all PEM files under one directory."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, directory: Path, hosts: list[str]) -> TlsFiles:
        directory.mkdir(parents=True, exist_ok=True)
        ca, ca_key = pki.new_ca("etcd test CA")
        files = cls(ca=directory / "ca.pem", server_cert=directory / "server.pem", server_key=directory / "server.key",
                    client_cert=directory / "client.pem", client_key=directory / "client.key")
        files.ca.write_bytes(pki.cert_pem(ca))
        for cert, key, server in ((files.server_cert, files.server_key, True), (files.client_cert, files.client_key,
                                                                                False)):
            k = pki.new_key()
            key.write_bytes(pki.key_pem(k))
            cert.write_bytes(pki.cert_pem(pki.issue(ca, ca_key, k.public_key(), "etcd" if server else "corral",
                                                    hosts if server else None, server=server, client=True)))
        return files


class EtcdCluster:
    def __init__(self, root: Path, members: int, tls: bool = False) -> None:
        self.root = root
        self.names = [f"m{i}" for i in range(members)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        self.initial_cluster = ",".join(f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports,
                                                                                       strict=True))
        self.tls = TlsFiles.make(root / "tls", ["127.0.0.1", "localhost"]) if tls else None
        self.scheme = "https" if tls else "http"

    @property
    def endpoints(self) -> list[str]:
        return [f"{self.scheme}://127.0.0.1:{p}" for p in self.client_ports]

    @property
    def hosts(self) -> str:
        """``127.0.0.1:P0,127.0.0.1:P1,...`` as ``corral server --store etcd://...`` takes them."""
        return ",".join(f"127.0.0.1:{p}" for p in self.client_ports)

    def url(self, namespace: str = "/corral") -> str:
        url = f"etcd://{self.hosts}/{namespace.strip('/')}"
        if self.tls is not None:
            url += f"?cacert={self.tls.ca}&cert={self.tls.client_cert}&key={self.tls.client_key}"
        return url

    def http(self) -> httpx.Client:
        """A client of the members' own HTTP endpoints (/health), with the client certificate under TLS."""
        if self.tls is None:
            return httpx.Client(timeout=1)
        return httpx.Client(timeout=1, verify=tls_context(self.tls.ca, self.tls.client_cert, self.tls.client_key))

    def start(self, i: int) -> None:
        if self.procs[i] is not None and self.procs[i].poll() is None:
            return
        name, cport, pport = self.names[i], self.client_ports[i], self.peer_ports[i]
        data = self.root / name
        data.mkdir(parents=True, exist_ok=True)
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[i] = subprocess.Popen(
            [ETCD_BIN, "--name", name, "--data-dir", str(data / "data"),
             "--listen-client-urls", f"{self.scheme}://127.0.0.1:{cport}",
             "--advertise-client-urls", f"{self.scheme}://127.0.0.1:{cport}",
             *(["--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                "--trusted-ca-file", str(self.tls.ca), "--client-cert-auth"] if self.tls else []),
             "--listen-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
             "--initial-cluster", self.initial_cluster, "--initial-cluster-token", self.root.name,
             # What docs/etcd.md recommends: etcd compacts its own history, keeping as much as SQLite.
             "--auto-compaction-mode", "revision", "--auto-compaction-retention", "10000",
             "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    def wait_healthy(self, indexes: list[int] | None = None, timeout: float = 30.0) -> None:
        """Until each member named (all by default) answers /health with a leader known."""
        deadline = time.monotonic() + timeout
        with self.http() as http:
            self._wait_healthy(http, indexes, deadline, timeout)

    def _wait_healthy(self, http: httpx.Client, indexes: list[int] | None, deadline: float, timeout: float) -> None:
        for i in indexes if indexes is not None else range(len(self.names)):
            while True:
                proc = self.procs[i]
                if proc is None or proc.poll() is not None:
                    log = (self.root / f"{self.names[i]}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"etcd member {self.names[i]} exited:\n{log}")
                try:
                    if http.get(f"{self.endpoints[i]}/health").json().get("health") == "true":
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd member {self.names[i]} not healthy after {timeout} s")
                time.sleep(0.1)

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (a crash)."""
        self._end(i, kill=True)

    def stop(self, i: int) -> None:
        """SIGTERM member ``i`` (an orderly stop)."""
        self._end(i, kill=False)

    def _end(self, i: int, *, kill: bool) -> None:
        proc = self.procs[i]
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill() if kill else proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs[i] = None

    def close(self) -> None:
        for i in range(len(self.names)):
            self.kill(i)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def run_etcd(tmp_path: Path, members: int = 1, tls: bool = False) -> Iterator[EtcdCluster]:
    """Start ``members`` etcd members (a fresh cluster), yield it, then kill them and remove their data."""
    for attempt in range(3):  # a free port can be taken by someone else before etcd binds it
        cluster = EtcdCluster(tmp_path / f"etcd-{free_port()}", members, tls=tls)
        try:
            for i in range(members):
                cluster.start(i)
            cluster.wait_healthy()
        except (RuntimeError, TimeoutError):
            cluster.close()
            if attempt == 2:
                raise
            continue
        try:
            yield cluster
        finally:
            cluster.close()
        return


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member for the session; tests keep apart by namespace (``etcd_namespace``)."""
    with run_etcd(tmp_path_factory.mktemp("etcd")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One etcd member behind client TLS (client certificates required) for the session."""
    with run_etcd(tmp_path_factory.mktemp("etcd-tls"), tls=True) as cluster:
        yield cluster


@pytest.fixture
def etcd_namespace() -> str:
    return f"/t{uuid.uuid4().hex[:12]}"
