"""End to end against a real Kubernetes control plane: kube-apiserver (+ kube-controller-manager and
kube-scheduler for Deployments), Debian's etcd, kubectl, and `corral kube-node`.

No registry these machines reach ships the Kubernetes server binaries, so this runs only when
``KUBE_APISERVER`` names a kube-apiserver binary from a Kubernetes release (kube-controller-manager and
kube-scheduler are taken from the same directory); see docs/kube.md.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from corral_server import CORRAL, CorralServer, free_port
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

APISERVER = os.environ.get("KUBE_APISERVER", "")
KUBECTL = os.environ.get("KUBECTL") or shutil.which("kubectl") or ""
NODE = "corral-e2e"

pytestmark = pytest.mark.skipif(
    not (APISERVER and Path(APISERVER).is_file() and KUBECTL and shutil.which("etcd")),
    reason="needs KUBE_APISERVER=/path/to/kube-apiserver (a Kubernetes release's server binaries, with "
           "kube-controller-manager and kube-scheduler beside it), kubectl and etcd; see docs/kube.md")


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


Pair = tuple[x509.Certificate, rsa.RSAPrivateKey]


def _cert(path: Path, name: str, ca: Pair | None, *, orgs: tuple[str, ...] = (),
          sans: list[x509.GeneralName] | None = None, is_ca: bool = False) -> Pair:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         *[x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]])
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca[0].subject if ca else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = b.sign(ca[1] if ca else key, hashes.SHA256())
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(_pem_key(key))
    return cert, key


def _wait(pred, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = pred()
        except (subprocess.CalledProcessError, httpx.HTTPError, ValueError, KeyError):
            got = None
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kubeconfig = root / "admin.kubeconfig"

    def start(self) -> None:
        pki = self.root / "pki"
        pki.mkdir()
        ca = _cert(pki / "ca", "cku-ca", None, is_ca=True)
        _cert(pki / "apiserver", "kube-apiserver", ca, sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                            x509.DNSName("localhost")])
        _cert(pki / "admin", "admin", ca, orgs=("system:masters",))
        _cert(pki / "kubelet-client", "kube-apiserver-kubelet-client", ca, orgs=("system:masters",))
        sa = _key()
        (pki / "sa.key").write_bytes(_pem_key(sa))
        (pki / "sa.pub").write_bytes(sa.public_key().public_bytes(serialization.Encoding.PEM,
                                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
        etcd_port, peer, port = free_port(), free_port(), free_port()
        self.port = port
        log = open(self.root / "cluster.log", "wb")
        self.procs.append(subprocess.Popen(
            ["etcd", "--name", "cku", "--data-dir", str(self.root / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls",
             f"http://127.0.0.1:{peer}", "--initial-cluster", f"cku=http://127.0.0.1:{peer}"],
            stdout=log, stderr=subprocess.STDOUT))
        self.procs.append(subprocess.Popen(
            [APISERVER, f"--etcd-servers=http://127.0.0.1:{etcd_port}", f"--secure-port={port}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--tls-cert-file={pki}/apiserver.pem", f"--tls-private-key-file={pki}/apiserver.key",
             f"--client-ca-file={pki}/ca.pem", "--authorization-mode=Node,RBAC",
             f"--service-account-key-file={pki}/sa.pub", f"--service-account-signing-key-file={pki}/sa.key",
             "--service-account-issuer=https://kubernetes.default.svc", "--service-cluster-ip-range=10.0.0.0/24",
             f"--kubelet-client-certificate={pki}/kubelet-client.pem",
             f"--kubelet-client-key={pki}/kubelet-client.key", "--kubelet-preferred-address-types=InternalIP"],
            stdout=log, stderr=subprocess.STDOUT))
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "cku",
            "clusters": [{"name": "cku", "cluster": {"server": f"https://127.0.0.1:{port}",
                                                     "certificate-authority": f"{pki}/ca.pem"}}],
            "users": [{"name": "admin", "user": {"client-certificate": f"{pki}/admin.pem",
                                                 "client-key": f"{pki}/admin.key"}}],
            "contexts": [{"name": "cku", "context": {"cluster": "cku", "user": "admin"}}]}))
        _wait(lambda: self.kubectl("get", "--raw", "/readyz").strip() == "ok", 90, "kube-apiserver")
        bindir = Path(APISERVER).parent
        self.procs.append(subprocess.Popen(
            [str(bindir / "kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
             f"--service-account-private-key-file={pki}/sa.key", f"--root-ca-file={pki}/ca.pem",
             "--use-service-account-credentials=false", "--controllers=*", "--leader-elect=false",
             f"--secure-port={free_port()}"], stdout=log, stderr=subprocess.STDOUT))
        self.procs.append(subprocess.Popen(
            [str(bindir / "kube-scheduler"), f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
             f"--secure-port={free_port()}"], stdout=log, stderr=subprocess.STDOUT))
        _wait(lambda: "default" in self.kubectl("get", "serviceaccount", "-o", "name"), 60,
              "the default service account")

    def kubectl(self, *args: str, timeout: float = 60) -> str:
        return subprocess.run([KUBECTL, f"--kubeconfig={self.kubeconfig}", *args], check=True, capture_output=True,
                              text=True, timeout=timeout).stdout

    def close(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start()
        yield c
    finally:
        c.close()


DEPLOYMENT = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {
        "metadata": {"labels": {"app": "web"}},
        "spec": {"nodeSelector": {"type": "virtual-kubelet"},
                 "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Equal", "value": "corral",
                                  "effect": "NoSchedule"}],
                 "containers": [{"name": "web", "image": "corral/busybox:latest",
                                 "command": ["sh", "-c", "echo hello from $(HOSTNAME); exec httpd -f -p 80 -h /"],
                                 "env": [{"name": "HOSTNAME", "valueFrom": {"fieldRef":
                                                                           {"fieldPath": "metadata.name"}}}],
                                 "ports": [{"containerPort": 80}],
                                 "readinessProbe": {"httpGet": {"path": "/etc/hostname", "port": 80},
                                                    "periodSeconds": 1},
                                 "livenessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": 5},
                                 "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}}}


def test_deployment_on_the_corral_node(cluster: Cluster, corral: CorralServer, tmp_path: Path) -> None:
    kport = free_port()
    node = subprocess.Popen([CORRAL, "kube-node", "--kubeconfig", str(cluster.kubeconfig), "--name", NODE,
                             "--corral-config", str(corral.config_path), "--port", str(kport),
                             "--state-dir", str(tmp_path / "kube-node"), "-g", "kube-e2e", "-v"],
                            env=corral.env, stdout=open(tmp_path / "kube-node.log", "wb"), stderr=subprocess.STDOUT)
    client = corral.client()
    try:
        node_json = _wait(lambda: json.loads(cluster.kubectl("get", "node", NODE, "-o", "json")), 60, "the node")
        assert node_json["metadata"]["labels"]["type"] == "virtual-kubelet"
        assert {"key": "virtual-kubelet.io/provider", "value": "corral", "effect": "NoSchedule"} in \
            node_json["spec"]["taints"]
        cluster.kubectl("wait", "--for=condition=Ready", f"node/{NODE}", "--timeout=60s")
        assert cluster.kubectl("get", "lease", "-n", "kube-node-lease", NODE, "-o", "name")

        (tmp_path / "web.json").write_text(json.dumps(DEPLOYMENT))
        cluster.kubectl("apply", "-f", str(tmp_path / "web.json"))
        cluster.kubectl("rollout", "status", "deployment/web", "--timeout=120s", timeout=130)
        pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=web", "-o", "json"))["items"]
        assert len(pods) == 3
        for p in pods:
            assert p["status"]["phase"] == "Running" and p["status"]["podIP"]
            assert {c["type"]: c["status"] for c in p["status"]["conditions"]}["Ready"] == "True"
        pod = pods[0]["metadata"]["name"]

        logs = subprocess.Popen([KUBECTL, f"--kubeconfig={cluster.kubeconfig}", "logs", "-f", pod],
                                stdout=subprocess.PIPE, text=True)
        assert logs.stdout is not None and logs.stdout.readline().strip() == f"hello from {pod}"
        logs.terminate()
        assert cluster.kubectl("exec", pod, "--", "cat", "/etc/hostname").strip()
        lport = free_port()
        fwd = subprocess.Popen([KUBECTL, f"--kubeconfig={cluster.kubeconfig}", "port-forward", f"pod/{pod}",
                                f"{lport}:80"], stdout=subprocess.PIPE, text=True)
        try:
            got = _wait(lambda: httpx.get(f"http://127.0.0.1:{lport}/etc/hostname", timeout=5), 30, "port-forward")
            assert got.status_code == 200
        finally:
            fwd.terminate()
        summary = json.loads(cluster.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/stats/summary"))
        assert summary["node"]["nodeName"] == NODE and len(summary["pods"]) == 3
        assert "container_cpu_usage_seconds_total" in cluster.kubectl(
            "get", "--raw", f"/api/v1/nodes/{NODE}/proxy/metrics/resource")
        if "metrics.k8s.io" in cluster.kubectl("api-versions"):  # with metrics-server installed
            assert pod in cluster.kubectl("top", "pod")

        cluster.kubectl("scale", "deployment/web", "--replicas=0")
        _wait(lambda: not client.request("GET", client.group_path("kube-e2e")).json()["value"], 90,
              "the groups to be gone")
        _wait(lambda: not json.loads(cluster.kubectl("get", "pods", "-o", "json"))["items"], 60, "the pods to go")
    finally:
        node.terminate()
        node.wait(20)
        for g in client.request("GET", client.group_path("kube-e2e")).json()["value"]:
            client.request("DELETE", client.group_path("kube-e2e", g["name"]))
