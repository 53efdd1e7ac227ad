"""A cluster on one machine: three hosts (network namespaces on a fabric), each running its own `corral agent`.

One fabric for the whole module (``tests/cluster.py``): a registry every node pulls from, a
`corral server`, three agents. The tests run in order and leave the cluster as they found it
(a crashed host is brought back, a cut link healed); the fixture removes everything at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cluster import CORRAL, UPLINK, ClusterFabric, Host, OverlapWatch, Server, eventually, trust
from etcd_support import run_etcd
from groups import container, exec_sync, get, group, put, wait_for
from prometheus_client.parser import text_string_to_metric_families
from registry import run_registry
from websockets.exceptions import ConnectionClosed

from corral.cli.client import Client
from corral.cli.terminal import exit_code, open_session
from corral.storage.glusterd import GlusterServer

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

RG = "ccl"
SLEEPER = ["sleep", "3600"]


SHARE = {"name": "data", "azureFile": {"shareName": "data", "storageAccountName": "ccl",
                                       "storageAccountKey": "k"}}


@contextlib.contextmanager
def gluster_volume(root: Path) -> Iterator[str]:
    """A GlusterFS volume served on the fabric's uplink (corral's own glusterd); yields its gluster:// source."""
    server = GlusterServer(root / "storage", UPLINK, base_port=49450, max_port=49499)
    try:
        server.start()
        server.create_volume("cclshares", [f"{UPLINK}:{root}/bricks/b1"])
        yield f"gluster://{UPLINK}/cclshares"
    finally:
        if server.pid():
            server.delete_volume("cclshares")
        server.stop()


@pytest.fixture(scope="module")
def fabric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterFabric]:
    """Three hosts, each an agent; two servers on a three-member etcd (client TLS, client certificates); a registry;
    a GlusterFS volume for shares."""
    root = tmp_path_factory.mktemp("cluster")
    fab = ClusterFabric(root)
    fab.hosts[0].zone, fab.hosts[1].zone, fab.hosts[2].zone = "z1", "z2", "z1"
    for h in fab.hosts:  # three nodes sharing a 2-core machine each offer their part of it
        h.cpu, h.memory = 0.6, 6
    try:
        fab.build()
        with run_etcd(root, members=3, tls=True) as etcd, run_registry(root / "registry", host=UPLINK) as reg, \
                gluster_volume(root) as shares:
            try:
                fab.env["CORRAL_INSECURE_REGISTRIES"] = reg.host_port
                fab.image = f"{reg.host_port}/corral/busybox:latest"  # type: ignore[attr-defined]
                fab.etcd = etcd  # type: ignore[attr-defined]
                build = root / "build"
                subprocess.run([CORRAL, "image", "build-base", "--data-dir", str(build)], check=True,
                               capture_output=True)
                subprocess.run([CORRAL, "image", "push", "corral/busybox:latest", img(fab), "--data-dir", str(build)],
                               check=True, capture_output=True, env=fab.env)
                fab.start_server("s1", etcd.url("/ccl"))
                fab.start_server("s2", etcd.url("/ccl"))
                for h in fab.hosts:
                    fab.start_agent(h, wait=False, extra=["--shares", shares])
                for h in fab.hosts:
                    fab.wait_node(h, "Ready")
                # One share, made on one node, seen by every node (the volume each one mounts).
                subprocess.run([CORRAL, "share", "create", "ccl/data", "--data-dir", str(fab.hosts[0].data_dir)],
                               check=True, capture_output=True, env=fab.env)
                yield fab
            finally:
                fab.close()
    finally:
        fab.cleanup_network()
        assert fab.leftovers() == []


def img(fab: ClusterFabric) -> str:
    return fab.image  # type: ignore[attr-defined, no-any-return]


def sleeper(fab: ClusterFabric, name: str, cpu: float = 0.1, **props: Any) -> dict[str, Any]:
    return group(container(name, SLEEPER, cpu=cpu, image=img(fab)), restartPolicy="Always", **props)


def running(g: dict[str, Any]) -> bool:
    return g["properties"]["instanceView"]["state"] == "Running"


def host_named(fab: ClusterFabric, name: str) -> Host:
    return next(h for h in fab.hosts if h.name == name)


def uid_of(fab: ClusterFabric, name: str) -> str:
    """A group's uid, as its node's cgroups name it."""
    node = fab.placement()[name]
    h = host_named(fab, node)
    for d in (Path("/sys/fs/cgroup/pids") / h.cgroup_parent.strip("/")).iterdir():
        if d.is_dir() and any(c.name.endswith(f"-c-{name}") for c in d.iterdir() if c.is_dir()):
            return d.name
    raise AssertionError(f"no cgroup of {name} on {node}")


def delete_all(client: Client, keep: tuple[str, ...] = ()) -> None:
    for g in client.request("GET", client.group_path(RG)).json()["value"]:
        if g["name"] in keep:
            continue
        resp = client.request("DELETE", client.group_path(RG, g["name"]))
        if resp.status_code == 202:
            client.wait_operation(resp, timeout=60)


# placement, credentials, access ------------------------------------------------------------------------------------
def test_placement_across_the_hosts(fabric: ClusterFabric) -> None:
    client = fabric.client()
    # Spread (the default policy): three groups, three hosts.
    for i in range(3):
        put(client, RG, f"spread{i}", sleeper(fabric, f"spread{i}", cpu=0.5))
    where = fabric.placement()
    assert sorted(where[f"spread{i}"] for i in range(3)) == ["ccl-h1", "ccl-h2", "ccl-h3"]
    for h in fabric.hosts:  # each node pulled the image from the registry itself
        assert (h.data_dir / "images").is_dir()
    delete_all(client)
    # A zone-pinned group lands in its zone: z2 is ccl-h2's alone.
    pinned = sleeper(fabric, "pinned")
    pinned["zones"] = ["z2"]
    put(client, RG, "pinned", pinned)
    assert fabric.placement()["pinned"] == "ccl-h2"
    # A required anti-affinity keeps them apart: with one host cordoned, the third waits for it.
    client.request("POST", "/providers/Corral/nodes/ccl-h3/cordon")
    try:
        for i in range(3):
            body = sleeper(fabric, f"apart{i}", placement={"antiAffinity": [{"tags": {"app": "apart"}}]})
            body["tags"] = {"app": "apart"}
            client.request("PUT", client.group_path(RG, f"apart{i}"), json=body)
        eventually(lambda: len([n for n in fabric.placement() if n.startswith("apart")]) == 2, what="two placed")
        waiting = next(f"apart{i}" for i in range(3) if f"apart{i}" not in fabric.placement())
        events = get(client, RG, waiting)["properties"]["instanceView"]["events"]
        assert "anti-affinity" in events[-1]["message"]
    finally:
        client.request("POST", "/providers/Corral/nodes/ccl-h3/uncordon")
    eventually(lambda: fabric.placement().get(waiting) == "ccl-h3", what="placed once the host is back")
    where = fabric.placement()
    assert sorted(where[f"apart{i}"] for i in range(3)) == ["ccl-h1", "ccl-h2", "ccl-h3"]
    delete_all(client)


def _node_client(fab: ClusterFabric, host: Host) -> httpx.Client:
    creds = host.data_dir / "agent" / "credentials"
    token = (creds / "node-token").read_text().strip()
    return httpx.Client(base_url=fab.servers[0].url + "/link/v1", verify=trust(creds / "ca.pem"),
                        headers={"Authorization": f"Bearer {token}"}, timeout=10)


def test_node_credentials_reach_only_their_own_node(fabric: ClusterFabric) -> None:
    client = fabric.client()
    nsg = f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/Microsoft.Network/networkSecurityGroups/owned"
    assert client.request("PUT", nsg, json={"location": "local", "properties": {}}).status_code in (200, 201)
    put(client, RG, "owned", sleeper(fabric, "owned", networkSecurityGroup={"id": nsg}))
    owner = host_named(fabric, fabric.placement()["owned"])
    other = next(h for h in fabric.hosts if h is not owner)
    key = f"/groups/{client.sub}/{RG}/owned"
    uid = uid_of(fabric, "owned")
    with _node_client(fabric, other) as intruder, _node_client(fabric, owner) as rightful:
        # Another node's assignments, one of its groups, its status: 403.
        assert intruder.post("/assignments", json={"node": owner.name}).status_code == 403
        assert intruder.post("/last-status", json={"key": key, "uid": uid}).status_code == 403
        bogus = {"uid": uid, "node": other.name, "state": "Failed"}
        assert intruder.post("/report", json={"key": key, "status": bogus}).status_code == 403
        assert intruder.post("/release", json={"key": key, "uid": uid}).status_code == 403
        assert intruder.post("/heartbeat", json={"node": owner.name}).status_code == 403
        # The rules of a security group only a node running a group with it may read.
        assert intruder.post("/group-rules", json={"key": key, "nsgId": nsg}).status_code == 403
        assert rightful.post("/group-rules", json={"key": key, "nsgId": nsg}).status_code == 200
        # Its own: fine. And the group it does not own is not among its assignments.
        mine = intruder.post("/assignments", json={"node": other.name})
        assert mine.status_code == 200 and key not in mine.json()["groups"]
        assert key in rightful.post("/assignments", json={"node": owner.name}).json()["groups"]
        # The operator's token is not a node credential, and a node token is not the operator's.
        op = httpx.post(fabric.servers[0].url + "/link/v1/assignments", json={"node": owner.name},
                        verify=trust(client.config.ca_cert), headers={"Authorization": f"Bearer {client.config.token}"})
        assert op.status_code == 401
        assert rightful.get(fabric.servers[0].url + "/providers/Corral/nodes",
                            params={"api-version": "2023-05-01"}).status_code == 401
    # A node's own API takes only the servers' client certificates: not another node's, not none.
    creds = other.data_dir / "agent" / "credentials"
    ctx = ssl.create_default_context(cafile=str(creds / "ca.pem"))
    ctx.load_cert_chain(str(creds / "node.pem"), str(creds / "node-key.pem"))
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://{owner.ip}:10250/node/v1/images", verify=ctx, timeout=5)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://{owner.ip}:10250/node/v1/images", verify=trust(creds / "ca.pem"), timeout=5)


TICKER = "echo hello from $(hostname); " + \
    "mkdir -p /www && echo page > /www/index.html && httpd -p 8080 -h /www; while true; do echo tick; sleep 0.2; done"


def _session(client: Client, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = client.request("POST", path, json=body or {}).json()
    return open_session(answer["webSocketUri"], answer["password"], client.config.ca_cert)


def _frames_until(conn: Any, want: bytes, limit: float = 15) -> bytes:
    got = b""
    deadline = time.monotonic() + limit
    while want not in got and time.monotonic() < deadline:
        frame = conn.recv(timeout=limit)
        got += frame if isinstance(frame, bytes) else frame.encode()
    return got


def test_logs_exec_attach_and_port_forward_go_through_the_server(fabric: ClusterFabric) -> None:
    client = fabric.client()
    groups_on(fabric, fabric.hosts[1], ["talker"], body=group(container("talker", ["sh", "-c", TICKER],
                                                                        image=img(fabric))))
    base = client.group_path(RG, "talker") + "/containers/talker"
    logs = eventually(lambda: client.request("GET", base + "/logs").json()["content"], what="logs")
    assert "hello from talker" in logs
    res = exec_sync(client, RG, "talker", "talker", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (res["exitCode"], res["stdout"], res["stderr"]) == (3, "out\n", "err\n")
    # A terminal (ACI exec): a websocket to the server, a pty on the node; the exit code comes back.
    conn = _session(client, base + "/exec", {"command": "sh -c 'cat /etc/hostname; exit 4'"})
    try:
        assert b"talker" in _frames_until(conn, b"talker")
        with pytest.raises(ConnectionClosed):
            while True:
                conn.recv(timeout=15)
        assert exit_code(conn) == 4
    finally:
        conn.close()
    # Attach and a log follow stream the node's output through the server.
    conn = _session(client, base + "/attach")
    try:
        assert b"tick" in _frames_until(conn, b"tick")
    finally:
        conn.close()
    with client.http.stream("GET", base + "/logs", params={"follow": "true", "tail": 1,
                                                           "api-version": "2023-05-01"}) as resp:
        first = next(resp.iter_lines())
        assert "tick" in first or "hello" in first
    # Port-forward: the node connects to the group's port, bytes travel through the server.
    conn = _session(client, client.group_path(RG, "talker") + "/portForward", {"port": 8080})
    try:
        conn.send(b"GET /index.html HTTP/1.0\r\n\r\n")
        assert b"page" in _frames_until(conn, b"page")
    finally:
        conn.close()
    delete_all(client)


def test_stop_answers_once_the_node_stopped_the_group(fabric: ClusterFabric) -> None:
    client = fabric.client()
    put(client, RG, "owned", sleeper(fabric, "owned"))
    uid = uid_of(fabric, "owned")
    client.request("POST", client.group_path(RG, "owned") + "/stop")
    assert get(client, RG, "owned")["properties"]["instanceView"]["state"] == "Stopped"
    assert fabric.running_copies(uid) == []
    resp = client.request("POST", client.group_path(RG, "owned") + "/start")
    client.wait_operation(resp, timeout=60)
    assert running(get(client, RG, "owned"))
    delete_all(client)


def test_a_started_group_moves_when_its_host_filled_up_meanwhile(fabric: ClusterFabric) -> None:
    client = fabric.client()
    host = fabric.hosts[2]
    uid = groups_on(fabric, host, ["first"], body=sleeper(fabric, "first", cpu=0.4))["first"]
    client.request("POST", client.group_path(RG, "first") + "/stop")
    groups_on(fabric, host, ["second"], body=sleeper(fabric, "second", cpu=0.4))  # the room the stopped one gave back
    client.wait_operation(client.request("POST", client.group_path(RG, "first") + "/start"), timeout=60)
    g = wait_for(client, RG, "first", running)
    where = fabric.placement()
    assert where["first"] != host.name and where["second"] == host.name  # moved: its host has 0.2 of 0.6 cores left
    assert any(e["name"] == "Evicted" and f"node {host.name} cannot take the group" in e["message"]
               for e in g["properties"]["instanceView"]["events"])
    assert fabric.running_copies(uid) == [where["first"]]
    assert fabric.node(host)["properties"]["allocated"]["cpu"] == 0.4
    delete_all(client)


def resolve(client: Client, probe: str, name: str) -> list[str]:
    """The addresses ``name`` resolves to inside group ``probe`` (its resolver: Corral's DNS at its node's gateway)."""
    res = exec_sync(client, RG, probe, probe, "nslookup", name)
    lines = res["stdout"].split("Name:", 1)[-1].splitlines() if "Name:" in res["stdout"] else []
    return sorted(ln.split()[-1] for ln in lines if ln.startswith("Address"))


def vnet_address(client: Client, name: str) -> str:
    out = exec_sync(client, RG, name, name, "ip", "-4", "-o", "addr", "show", "eth0")["stdout"]
    return out.split(" inet ", 1)[1].split("/", 1)[0]


WEB = "mkdir -p /www && echo served-by-$(hostname) > /www/index.html && httpd -f -p 8080 -h /www"


def test_groups_find_and_reach_each_other_across_hosts(fabric: ClusterFabric) -> None:
    client = fabric.client()
    groups_on(fabric, fabric.hosts[2], ["web"], body=group(container("web", ["sh", "-c", WEB], image=img(fabric))))
    groups_on(fabric, fabric.hosts[0], ["probe"])
    web_ip = vnet_address(client, "web")
    # By name (served by the probe's own node at its gateway, fed through the link), and over the fabric.
    assert eventually(lambda: resolve(client, "probe", "web"), what="web resolves") == [web_ip]
    page = exec_sync(client, RG, "probe", "probe", "timeout", "5", "wget", "-q", "-O", "-", "http://web:8080/")
    assert page["stdout"].strip() == "served-by-web"
    delete_all(client)


# failover ------------------------------------------------------------------------------------------------------------
def _moved_and_running(fab: ClusterFabric, names: list[str], away_from: str) -> bool:
    client = fab.client()
    where = fab.placement()
    return all(where.get(n) not in (None, away_from) and running(get(client, RG, n)) for n in names)


def cordon_all_but(fab: ClusterFabric, keep: Host) -> None:
    for h in fab.hosts:
        if h is not keep:
            fab.client().request("POST", f"/providers/Corral/nodes/{h.name}/cordon")


def uncordon_all(fab: ClusterFabric) -> None:
    for h in fab.hosts:
        fab.client().request("POST", f"/providers/Corral/nodes/{h.name}/uncordon")


def groups_on(fab: ClusterFabric, host: Host, names: list[str], body: dict[str, Any] | None = None) -> dict[str, str]:
    """Create groups ``names`` (sleepers unless ``body``) on ``host``, the others cordoned meanwhile; name -> uid."""
    client = fab.client()
    cordon_all_but(fab, host)
    try:
        for n in names:
            put(client, RG, n, body or sleeper(fab, n))
    finally:
        uncordon_all(fab)
    assert all(fab.placement()[n] == host.name for n in names)
    return {n: uid_of(fab, n) for n in names}


def usage_of(client: Client, name: str) -> dict[str, Any]:
    rows = client.request("GET", f"/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/usageRecords",
                          params={"resourceGroup": RG}).json()["value"]
    return next(r for r in rows if r["name"] == name)


def test_an_agent_restart_keeps_its_groups_running(fabric: ClusterFabric) -> None:
    client = fabric.client()
    host = fabric.hosts[2]
    uids = groups_on(fabric, host, ["kept"])
    before = wait_for(client, RG, "kept", running)["properties"]["containers"][0]["properties"]["instanceView"]
    fabric.stop_agent(host)  # SIGTERM: it asks for its node to be held while it is away
    time.sleep(4)  # past the fence time and the node lease
    assert fabric.running_copies(uids["kept"]) == [host.name]
    assert fabric.node(host)["properties"]["status"] == "Ready"
    fabric.start_agent(host)
    time.sleep(1)
    after = wait_for(client, RG, "kept", running)["properties"]["containers"][0]["properties"]["instanceView"]
    assert after["restartCount"] == before["restartCount"] == 0
    assert after["currentState"]["startTime"] == before["currentState"]["startTime"]  # the same process, adopted
    assert fabric.placement()["kept"] == host.name
    delete_all(client)



def test_an_agent_serves_its_own_metrics_to_a_scraper(fabric: ClusterFabric) -> None:
    """`corral agent --metrics-listen`: what only the agent's process knows (its image pulls, its network pool)."""
    client = fabric.client()
    host = host_named(fabric, "ccl-h2")  # zone z2's only host
    plain = list(host.extra)
    fabric.stop_agent(host)
    fabric.start_agent(host, extra=[*plain, "--metrics-listen", f"{host.ip}:9464"])
    try:
        absent = group(container("nopull", SLEEPER, image=img(fabric).replace("/busybox:", "/absent:")),
                       restartPolicy="Always")
        absent["zones"] = ["z2"]
        put(client, RG, "nopull", absent, wait=False)  # its deployment fails: the image is nowhere

        def scraped() -> dict[str, Any]:
            try:  # the node stays Ready while its agent restarts: the agent may not listen yet
                text = httpx.get(f"http://{host.ip}:9464/metrics", timeout=5).text
            except httpx.ConnectError as exc:
                raise AssertionError(f"the agent's /metrics: {exc}") from None
            fams = {f.name: f for f in text_string_to_metric_families(text)}
            failed = [s for s in fams["corral_image_pull_duration_seconds"].samples
                      if s.name.endswith("_count") and s.labels["result"] == "failure" and s.value >= 1]
            pool = [s for s in fams["corral_network_pool_ready_sandboxes"].samples if s.labels["node"] == host.name]
            assert failed and pool, "no failed pull or no pool gauge of this node yet"
            return fams

        fams = eventually(scraped, what="the agent's /metrics")
        assert "process_resident_memory_bytes" in {s.name for s in fams["process_resident_memory_bytes"].samples}
        assert fabric.placement()["nopull"] == host.name
    finally:
        delete_all(client)
        fabric.stop_agent(host)
        fabric.start_agent(host, extra=plain)


RUNS = "echo run >> /data/runs; sleep 3600"


def failovers(fabric: ClusterFabric, reason: str) -> float:
    """corral_failovers_total{reason} summed over the servers' /metrics."""
    total = 0.0
    for server in fabric.servers:
        text = fabric.client(server).request("GET", "/metrics").text
        for fam in text_string_to_metric_families(text):
            total += sum(s.value for s in fam.samples
                         if s.name == "corral_failovers_total" and s.labels.get("reason") == reason)
    return total


def test_crash_moves_the_groups_of_a_dead_host(fabric: ClusterFabric) -> None:
    client = fabric.client()
    victim = fabric.hosts[0]
    uids = groups_on(fabric, victim, ["crash-a", "crash-b"])
    keeper = group(container("crash-share", ["sh", "-c", RUNS], image=img(fabric),
                             volumeMounts=[{"name": "data", "mountPath": "/data"}]),
                   restartPolicy="Always", volumes=[SHARE])
    uids |= groups_on(fabric, victim, ["crash-share"], body=keeper)
    groups_on(fabric, fabric.hosts[2], ["probe"])
    runs = eventually(lambda: exec_sync(client, RG, "crash-share", "crash-share", "cat", "/data/runs")["stdout"],
                      what="the share written")
    before = eventually(lambda: usage_of(client, "crash-a")["seconds"] >= 1 and usage_of(client, "crash-a"),
                        what="metered")
    t0 = time.monotonic()
    fabric.crash(victim)
    eventually(lambda: _moved_and_running(fabric, list(uids), victim.name), timeout=30, what="failover")
    print(f"crash -> all Running elsewhere: {time.monotonic() - t0:.1f} s")
    assert failovers(fabric, "NodeLost") >= len(uids)  # counted on whichever server leads
    where = fabric.placement()
    for n, uid in uids.items():
        events = [e["name"] for e in get(client, RG, n)["properties"]["instanceView"]["events"]]
        assert "NodeLost" in events
        assert fabric.running_copies(uid) == [where[n]]
    for n in ("crash-a", "crash-b"):
        # Same name, the new address (on the node it moved to).
        assert eventually(lambda n=n: resolve(client, "probe", n) == [vnet_address(client, n)], what="dns follows")
    # The share followed its group: the same file, one more run written on the new node.
    after_runs = eventually(lambda: exec_sync(client, RG, "crash-share", "crash-share", "cat", "/data/runs")["stdout"]
                            .count("run") == runs.count("run") + 1, what="the share followed")
    assert after_runs
    # Metering follows the group: the same record goes on, counting again on the new node.
    after = eventually(lambda: usage_of(client, "crash-a")["running"] and usage_of(client, "crash-a"), what="metered")
    assert after["uid"] == before["uid"] and after["seconds"] >= before["seconds"]
    # The host comes back: Ready again, and what was left of its copies is gone.
    fabric.start_agent(victim)
    eventually(lambda: not list(Path("/var/run/netns").glob(f"{victim.netns_prefix}*")), timeout=20,
               what="stale sandboxes removed")
    delete_all(client)


def test_drain_moves_the_groups_one_by_one(fabric: ClusterFabric) -> None:
    client = fabric.client()
    drained, twin = fabric.hosts[2], fabric.hosts[0]  # both in zone z1
    pinned = sleeper(fabric, "drain-z1")
    pinned["zones"] = ["z1"]
    uids = groups_on(fabric, drained, ["drain-a", "drain-b"]) | groups_on(fabric, drained, ["drain-z1"], body=pinned)
    env = {**fabric.env, "CORRAL_CONFIG": str(fabric.servers[0].config_path)}

    def drain(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CORRAL, "node", "drain", drained.name, "--timeout", "60", *flags], env=env,
                              capture_output=True, text=True, timeout=90)

    client.request("POST", f"/providers/Corral/nodes/{twin.name}/cordon")
    try:
        # The zone-pinned group fits on no other node now: the drain is refused, nothing changes.
        refused = drain()
        assert refused.returncode == 1 and "cannot be drained" in refused.stderr + refused.stdout
        assert "drain-z1 (0/3 nodes are available" in " ".join((refused.stderr + refused.stdout).split())
        assert fabric.node(drained)["properties"]["schedulable"]
        forced = drain("--force")  # the others move, it stays (running) until room appears
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert "drain-z1" in forced.stdout and fabric.placement()["drain-z1"] == drained.name
        assert fabric.running_copies(uids["drain-z1"]) == [drained.name]
    finally:
        client.request("POST", f"/providers/Corral/nodes/{twin.name}/uncordon")
    eventually(lambda: fabric.placement().get("drain-z1") == twin.name and running(get(client, RG, "drain-z1")),
               what="the pinned group moved once its zone had room")
    where = fabric.placement()
    for n, uid in uids.items():
        g = wait_for(client, RG, n, running)
        assert where[n] != drained.name and fabric.running_copies(uid) == [where[n]]
        assert "Evicted" in [e["name"] for e in g["properties"]["instanceView"]["events"]]
    node = fabric.node(drained)["properties"]
    assert not node["schedulable"] and node["groups"] == []
    listed = subprocess.run([CORRAL, "node", "list", "-o", "json"], env=env, capture_output=True, text=True,
                            timeout=30).stdout
    mine = next(n for n in json.loads(listed) if n["name"] == drained.name)["properties"]
    assert (mine["status"], mine["draining"], mine["schedulable"]) == ("Ready", True, False)
    subprocess.run([CORRAL, "node", "uncordon", drained.name], env=env, check=True, capture_output=True)
    assert fabric.node(drained)["properties"]["schedulable"]
    delete_all(client)


def test_partition_fences_the_cut_host_and_nothing_runs_twice(fabric: ClusterFabric) -> None:
    client = fabric.client()
    cut = fabric.hosts[1]
    uids = groups_on(fabric, cut, ["cut-a", "cut-b"])
    with OverlapWatch(fabric, uids) as watch:
        t0 = time.monotonic()
        fabric.cut(cut)
        try:
            # Cut off, the host stops its own copies (the agent and the containers' conmons stay alive).
            eventually(lambda: all(fabric.running_copies(u) != [cut.name] for u in uids.values()), timeout=10,
                       interval=0.05, what="self-fencing")
            print(f"cut -> fenced: {time.monotonic() - t0:.1f} s")
            assert cut.proc is not None and cut.proc.poll() is None
            eventually(lambda: _moved_and_running(fabric, list(uids), cut.name), timeout=30, what="failover")
            print(f"cut -> all Running elsewhere: {time.monotonic() - t0:.1f} s")
        finally:
            fabric.heal(cut)
        fabric.wait_node(cut, "Ready")
        # Back on the fabric, the host holds no stale copy; the groups keep running where they moved.
        eventually(lambda: not list(Path("/var/run/netns").glob(f"{cut.netns_prefix}*")), timeout=20,
                   what="stale sandboxes removed")
        time.sleep(1)
    assert watch.most == dict.fromkeys(uids, 1), watch.most
    where = fabric.placement()
    for n, uid in uids.items():
        assert where[n] != cut.name and fabric.running_copies(uid) == [where[n]]
    delete_all(client)


# the control plane -------------------------------------------------------------------------------------------------
def leader(fab: ClusterFabric) -> Server:
    return fab.leader(fab.etcd.url("/ccl"))  # type: ignore[attr-defined]


def stream_ops() -> list[tuple[str, int]]:
    """200 operations: 100 creates; each group 4 creates back is updated (even) or deleted (odd)."""
    ops: list[tuple[str, int]] = []
    for i in range(100):
        ops.append(("create", i))
        if i >= 4:
            ops.append(("update" if (i - 4) % 2 == 0 else "delete", i - 4))
    for k in range(96, 100):
        ops.append(("update" if k % 2 == 0 else "delete", k))
    return ops


def test_the_leader_dies_during_a_stream_of_changes(fabric: ClusterFabric) -> None:
    dead = leader(fabric)
    survivor = next(s for s in fabric.servers if s is not dead)
    client = fabric.client(survivor)
    ops = stream_ops()
    assert len(ops) == 200

    def body(k: int, value: str) -> dict[str, Any]:
        c = container(f"s{k}", SLEEPER, cpu=0.01, memory=0.01, image=img(fabric),
                      environmentVariables=[{"name": "V", "value": value}])
        return group(c, restartPolicy="Always")

    for n, (op, k) in enumerate(ops):
        if n == 60:
            fabric.kill_server(dead)  # SIGKILL: its lease on the controllers ends only by expiring
        if op == "create":
            client.request("PUT", client.group_path(RG, f"s{k}"), json=body(k, "v1"))
        elif op == "update":
            client.request("PUT", client.group_path(RG, f"s{k}"), json=body(k, "v2"))
        else:
            client.request("DELETE", client.group_path(RG, f"s{k}"))
    want = {f"s{k}" for k in range(0, 100, 2)}

    def converged() -> bool:
        groups = {g["name"]: g for g in client.request("GET", client.group_path(RG)).json()["value"]}
        return set(groups) == want and all(
            g["properties"]["provisioningState"] == "Succeeded" and running(g) for g in groups.values())

    eventually(converged, timeout=180, interval=0.5, what="every group in its desired state")
    assert leader(fabric) is survivor
    groups = client.request("GET", client.group_path(RG)).json()["value"]
    for g in groups:  # the update is what runs
        env = g["properties"]["containers"][0]["properties"]["environmentVariables"]
        assert env == [{"name": "V", "value": "v2"}]
    # None duplicated, none left over: one copy of each wanted group, and nothing else, on the hosts.
    copies = fabric.running_groups()
    assert len(copies) == len(want) and all(len(v) == 1 for v in copies.values()), copies
    delete_all(client)
    fabric.start_server(dead.name, dead.store)  # back, as a follower


def test_the_api_keeps_serving_with_one_etcd_member_stopped(fabric: ClusterFabric) -> None:
    etcd = fabric.etcd  # type: ignore[attr-defined]
    client = fabric.client()
    etcd.stop(0)
    try:
        put(client, RG, "quorum", sleeper(fabric, "quorum"))
        assert running(wait_for(client, RG, "quorum", running))
        time.sleep(3)  # longer than a node lease: heartbeats kept being recorded
        for h in fabric.hosts:
            assert fabric.node(h)["properties"]["status"] == "Ready"
        delete_all(client)
    finally:
        etcd.start(0)
        etcd.wait_healthy([0])
