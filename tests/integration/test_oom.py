"""Memory and pids limits end to end: OOMKilled is reported, a fork bomb is contained."""

from __future__ import annotations

import time
from pathlib import Path

from corral_server import CorralServer
from groups import container, container_cgroup, delete, get, group, put, view, wait_for

RG = "it-oom"


def test_container_over_its_memory_limit_is_terminated_oomkilled_with_an_event(corral: CorralServer) -> None:
    client = corral.client()
    # A shell variable of ~200 MB in a 64 MB container.
    hog = ["sh", "-c", "echo start; x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]
    put(client, RG, "oom", group(container("oom-hog", hog, cpu=1, memory=0.0625), restartPolicy="Never"))
    try:
        g = wait_for(client, RG, "oom", lambda g: g["properties"]["instanceView"]["state"] == "Failed", timeout=90)
        iv = view(g, "oom-hog")
        cur = iv["currentState"]
        assert cur["state"] == "Terminated" and cur["detailStatus"] == "OOMKilled", cur
        assert cur["exitCode"] == 137
        oom_events = [e for e in iv["events"] if "OOMKilled" in e["message"]]
        assert oom_events and oom_events[0]["type"] == "Warning", iv["events"]
        logs = client.request("GET", client.group_path(RG, "oom") + "/containers/oom-hog/logs").json()
        assert "start" in logs["content"] and "survived" not in logs["content"]
    finally:
        delete(client, RG, "oom")


def test_restarted_oom_container_keeps_oomkilled_as_previous_state(corral: CorralServer) -> None:
    client = corral.client()
    hog = ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a)"]
    put(client, RG, "oom-again", group(container("oom-again", hog, cpu=1, memory=0.0625), restartPolicy="OnFailure"))
    try:
        g = wait_for(client, RG, "oom-again", lambda g: view(g, "oom-again")["restartCount"] >= 1, timeout=90)
        prev = view(g, "oom-again")["previousState"]
        assert prev["state"] == "Terminated" and prev["detailStatus"] == "OOMKilled", prev
    finally:
        delete(client, RG, "oom-again")


def _fork_limit_hit(corral: CorralServer, client) -> bool:  # type: ignore[no-untyped-def]
    """The kernel refused a fork in the container: pids.events counts it, or the shell said so."""
    try:
        pids = Path(container_cgroup("pids", corral.cgroup_parent, "fork-bomb"))
        if int((pids / "pids.events").read_text().split()[1]) > 0:
            assert int((pids / "pids.current").read_text()) <= int((pids / "pids.max").read_text())
            return True
    except (OSError, AssertionError):
        pass  # between two runs of the container (the shell may exit when a fork fails)
    logs = client.request("GET", client.group_path(RG, "forkbomb") + "/containers/fork-bomb/logs").json()
    return "can't fork" in (logs.get("content") or "")


def test_pids_limit_stops_a_fork_bomb_and_the_node_keeps_answering(corral: CorralServer) -> None:
    client = corral.client()
    bomb = ["sh", "-c", "while true; do sleep 1000 & done"]
    put(client, RG, "forkbomb", group(container("fork-bomb", bomb, cpu=0.5, memory=0.5)))
    try:
        pids = Path(container_cgroup("pids", corral.cgroup_parent, "fork-bomb"))
        assert int((pids / "pids.max").read_text()) == 1024
        deadline = time.monotonic() + 60
        while not _fork_limit_hit(corral, client):
            assert time.monotonic() < deadline, "the fork bomb never reached the pids limit"
            time.sleep(0.2)
        # The control plane and agent still work, and other groups still start.
        assert client.http.get(f"{corral.config.endpoint}/healthz", timeout=10).status_code == 200
        assert get(client, RG, "forkbomb")["properties"]["instanceView"]["state"] in ("Running", "Pending")
        put(client, RG, "bystander", group(container("bystander", ["sleep", "3600"])))
        assert view(get(client, RG, "bystander"), "bystander")["currentState"]["state"] == "Running"
    finally:
        delete(client, RG, "forkbomb")
        delete(client, RG, "bystander")
