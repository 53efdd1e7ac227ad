"""securityContext and isolation levels on real containers, through the API.

Privileged containers run only on a node started with --allow-privileged; the
others are refused by the node (the create's operation fails with the reason).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from corral_server import CorralServer, running_corral
from groups import container, delete, exec_sync, get, group, put, view

RG = "it-security"

CAP_CHOWN, CAP_NET_ADMIN, CAP_SYS_ADMIN = 0, 12, 21
needs_runsc = pytest.mark.skipif(not shutil.which("runsc"), reason="runsc (gVisor) is not installed")


@pytest.fixture
def permissive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    """A node whose operator allows privileged containers and sandboxes groups by default."""
    with running_corral(tmp_path_factory.mktemp("corral-nf1"), bridge="ctnf1", subnet="10.70.0.0/16",
                        cgroup_parent="/corral-test-nf1",
                        extra=["--allow-privileged", "--isolation", "sandboxed"]) as server:
        yield server


def _status(client, name: str, ctr: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = exec_sync(client, RG, name, ctr, "cat", "/proc/self/status")["stdout"]
    return dict(line.split(":\t", 1) for line in out.splitlines() if ":\t" in line)


def _caps(fields: dict[str, str]) -> int:
    return int(fields["CapEff"].strip(), 16)


def test_privileged_is_refused_on_a_node_that_does_not_allow_it(corral: CorralServer) -> None:
    client = corral.client()
    body = group(container("priv-no", ["sleep", "3600"], securityContext={"privileged": True}))
    resp = client.request("PUT", client.group_path(RG, "priv-no"), json=body)
    try:
        result = client.wait_operation(resp, timeout=60)
        assert result["status"] == "Failed"
        assert "--allow-privileged" in result["error"]["message"]
        g = get(client, RG, "priv-no")
        assert g["properties"]["instanceView"]["state"] == "Failed"
        assert any(e["name"] == "PrivilegedNotAllowed" for e in g["properties"]["instanceView"]["events"])
        assert view(g, "priv-no")["currentState"]["state"] == "Waiting"  # never started
    finally:
        delete(client, RG, "priv-no")


def test_capabilities_users_and_privilege_escalation(corral: CorralServer) -> None:
    client = corral.client()
    body = group(
        container("sec-default", ["sleep", "3600"]),
        container("sec-caps", ["sleep", "3600"],
                  securityContext={"capabilities": {"add": ["NET_ADMIN"], "drop": ["CHOWN"]}}),
        container("sec-user", ["sleep", "3600"], securityContext={"runAsUser": 1234, "runAsGroup": 4321}),
        container("sec-escalate", ["sleep", "3600"], securityContext={"allowPrivilegeEscalation": True}),
    )
    put(client, RG, "sec", body)
    try:
        default = _status(client, "sec", "sec-default")
        assert default["NoNewPrivs"].strip() == "1"  # hardened default
        assert default["Seccomp"].strip() == "2"  # filtered
        caps = _caps(default)
        assert caps & (1 << CAP_CHOWN) and not caps & (1 << CAP_NET_ADMIN) and not caps & (1 << CAP_SYS_ADMIN)

        caps = _caps(_status(client, "sec", "sec-caps"))
        assert caps & (1 << CAP_NET_ADMIN) and not caps & (1 << CAP_CHOWN)
        res = exec_sync(client, RG, "sec", "sec-caps", "sh", "-c", "touch /tmp/f && chown 1:1 /tmp/f")
        assert res["exitCode"] != 0
        res = exec_sync(client, RG, "sec", "sec-caps", "ip", "addr", "add", "127.0.0.9/8", "dev", "lo")
        assert res["exitCode"] == 0, res
        assert exec_sync(client, RG, "sec", "sec-default", "ip", "addr", "add", "127.0.0.8/8", "dev", "lo")[
            "exitCode"] != 0

        assert exec_sync(client, RG, "sec", "sec-user", "id", "-u")["stdout"] == "1234\n"
        assert exec_sync(client, RG, "sec", "sec-user", "id", "-g")["stdout"] == "4321\n"
        assert _caps(_status(client, "sec", "sec-user")) == 0  # non-root keeps no effective capabilities

        assert _status(client, "sec", "sec-escalate")["NoNewPrivs"].strip() == "0"
    finally:
        delete(client, RG, "sec")


def _gvisor(client, name: str, ctr: str) -> bool:  # type: ignore[no-untyped-def]
    res = exec_sync(client, RG, name, ctr, "dmesg")
    return "gVisor" in res["stdout"]


@needs_runsc
def test_sandboxed_isolation_runs_the_group_under_gvisor(corral: CorralServer) -> None:
    client = corral.client()
    put(client, RG, "iso-field", group(container("iso-field", ["sleep", "3600"]), isolation="sandboxed"))
    put(client, RG, "iso-sku", group(container("iso-sku", ["sleep", "3600"]), sku="Confidential"))
    put(client, RG, "iso-none", group(container("iso-none", ["sleep", "3600"])))
    try:
        assert _gvisor(client, "iso-field", "iso-field")
        assert _gvisor(client, "iso-sku", "iso-sku")
        assert not _gvisor(client, "iso-none", "iso-none")
        # A sandboxed group still has its network: the host reaches it, and it has its address.
        g = get(client, RG, "iso-field")
        assert g["properties"]["isolation"] == "sandboxed"
        assert exec_sync(client, RG, "iso-field", "iso-field", "hostname")["stdout"] == "iso-field\n"
    finally:
        for name in ("iso-field", "iso-sku", "iso-none"):
            delete(client, RG, name)


@needs_runsc
def test_operator_allows_privileged_and_sets_sandboxed_as_the_default(permissive: CorralServer) -> None:
    client = permissive.client()
    put(client, RG, "priv-yes", group(container("priv-yes", ["sleep", "3600"], securityContext={"privileged": True}),
                                      isolation="default"))
    put(client, RG, "node-default", group(container("node-default", ["sleep", "3600"])))
    try:
        fields = _status(client, "priv-yes", "priv-yes")
        assert _caps(fields) & (1 << CAP_SYS_ADMIN) and fields["NoNewPrivs"].strip() == "0"
        assert not _gvisor(client, "priv-yes", "priv-yes")
        assert _gvisor(client, "node-default", "node-default")
    finally:
        delete(client, RG, "priv-yes")
        delete(client, RG, "node-default")
