"""Test helper: create container groups through Corral's API and wait on what the node reports."""

from __future__ import annotations

import glob
import time
from collections.abc import Callable
from typing import Any

from corral.cli.client import Client

IMAGE = "corral/busybox:latest"


def container(name: str, command: list[str], cpu: float = 0.1, memory: float = 0.1, **props: Any) -> dict[str, Any]:
    return {
        "name": name,
        "properties": {
            "image": props.pop("image", IMAGE),
            "command": command,
            "resources": {"requests": {"cpu": cpu, "memoryInGB": memory}, **props.pop("resources", {})},
            **props,
        },
    }


def group(*containers: dict[str, Any], **props: Any) -> dict[str, Any]:
    return {"location": "local", "properties": {"containers": list(containers), **props}}


def put(client: Client, rg: str, name: str, body: dict[str, Any], wait: bool = True) -> dict[str, Any]:
    resp = client.request("PUT", client.group_path(rg, name), json=body)
    if wait:
        result = client.wait_operation(resp, timeout=60)
        assert result["status"] == "Succeeded", result
    return get(client, rg, name)


def get(client: Client, rg: str, name: str) -> dict[str, Any]:
    return client.request("GET", client.group_path(rg, name)).json()


def delete(client: Client, rg: str, name: str) -> None:
    resp = client.request("DELETE", client.group_path(rg, name))
    if resp.status_code == 202:
        assert client.wait_operation(resp, timeout=60)["status"] == "Succeeded"


def wait_for(client: Client, rg: str, name: str, pred: Callable[[dict[str, Any]], bool],
             timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        g = get(client, rg, name)
        if pred(g):
            return g
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {name}: {g['properties']}")
        time.sleep(0.1)


def view(g: dict[str, Any], name: str) -> dict[str, Any]:
    """The instanceView of container ``name``."""
    for c in g["properties"]["containers"] + (g["properties"].get("initContainers") or []):
        if c["name"] == name:
            return c["properties"]["instanceView"]
    raise KeyError(name)


def state(g: dict[str, Any], name: str) -> str:
    return view(g, name)["currentState"]["state"]


def exec_sync(client: Client, rg: str, name: str, container: str, *argv: str) -> dict[str, Any]:
    path = client.group_path(rg, name) + f"/containers/{container}/execSync"
    return client.request("POST", path, json={"command": list(argv), "timeoutSeconds": 20}).json()


def container_cgroup(controller: str, parent: str, container: str) -> str:
    """Host directory of a container's cgroup, found by its (test-unique) container name."""
    found = glob.glob(f"/sys/fs/cgroup/{controller}{parent}/*/*-c-{container}")
    assert len(found) == 1, found
    return found[0]


# A group that answers "pong" on port 7000 (busybox nc), for reachability checks between groups.
LISTEN = ["sh", "-c", "while true; do echo pong | nc -l -p 7000; done"]


def private_ip(client: Client, rg: str, name: str) -> str:
    """The group's own address, as its container sees it (eth0)."""
    out = exec_sync(client, rg, name, name, "sh", "-c", "ip -4 -o addr show eth0")["stdout"]
    return out.split()[3].split("/")[0]


def talks(client: Client, rg: str, src: str, target: str, timeout: float = 10, expect: bool = True) -> bool:
    """Whether group ``src`` gets "pong" from ``target``:7000 (retrying until ``timeout`` for the expected
    answer: nodes apply network changes shortly after the API answers)."""
    deadline = time.monotonic() + timeout
    while True:
        res = exec_sync(client, rg, src, src, "sh", "-c", f"echo ping | timeout 2 nc {target} 7000")
        ok = res["stdout"].strip() == "pong"
        if ok == expect or time.monotonic() > deadline:
            return ok
        time.sleep(0.3)
