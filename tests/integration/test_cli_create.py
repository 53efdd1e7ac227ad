"""`corral container create` flags against a real server: --ports PUBLIC:CONTAINER, --file YAML,
--delete-on-exit, --sysctl, and the -o json|yaml|table outputs."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import yaml
from corral_server import CORRAL, CorralServer, free_port
from groups import delete

RG = "it-cli-create"
SMALL = ["--cpu", "0.1", "--memory", "0.1"]


def _get(url: str, timeout: float = 10) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


def test_ports_public_to_container_and_json_output(corral: CorralServer) -> None:
    port = free_port()
    try:
        res = corral.cli("container", "create", "-g", RG, "-n", "cli-web", "--image", "corral/busybox:latest",
                         "--command-line", "httpd -f -p 80 -h /var/www", "--ports", f"{port}:80",
                         "--ip-address", "Public", *SMALL, "-o", "json")
        g = json.loads(res.stdout)
        assert g["properties"]["ipAddress"]["ports"] == [{"port": 80, "protocol": "TCP", "publicPort": port}]
        assert g["properties"]["containers"][0]["properties"]["ports"] == [{"port": 80, "protocol": "TCP"}]
        assert g["properties"]["instanceView"]["state"] == "Running"
        page = _get(f"http://{g['properties']['ipAddress']['ip']}:{port}/")
        assert page.status_code == 200 and "Hello from Corral" in page.text
        # The table shows the mapping too.
        table = subprocess.run([CORRAL, "container", "show", "-g", RG, "-n", "cli-web"], capture_output=True,
                               text=True, env={**corral.env, "COLUMNS": "250"}, check=True).stdout
        assert f"{port}->80" in table and "Running" in table
    finally:
        delete(corral.client(), RG, "cli-web")


def test_create_from_a_yaml_file_and_yaml_output(corral: CorralServer, tmp_path: Path) -> None:
    doc = {
        "apiVersion": "2023-05-01", "location": "local", "name": "cli-file", "tags": {"team": "access"},
        "type": "Microsoft.ContainerInstance/containerGroups",
        "properties": {
            "osType": "Linux", "restartPolicy": "Always",
            "containers": [
                {"name": "first", "properties": {
                    "image": "corral/busybox:latest", "command": ["sh", "-c", "echo $WHO; sleep 3600"],
                    "environmentVariables": [{"name": "WHO", "value": "from-yaml"}],
                    "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}},
                {"name": "second", "properties": {
                    "image": "corral/busybox:latest", "command": ["sleep", "3600"],
                    "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}},
            ],
        },
    }
    path = tmp_path / "group.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        g = yaml.safe_load(corral.cli("container", "create", "-g", RG, "--file", str(path), "-o", "yaml").stdout)
        assert g["name"] == "cli-file" and g["tags"] == {"team": "access"}
        assert [c["name"] for c in g["properties"]["containers"]] == ["first", "second"]
        assert g["properties"]["instanceView"]["state"] == "Running"
        deadline = time.monotonic() + 10
        while "from-yaml" not in corral.cli("container", "logs", "-g", RG, "-n", "cli-file").stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        listed = json.loads(corral.cli("container", "list", "-g", RG, "-o", "json").stdout)
        assert "cli-file" in [x["name"] for x in listed]
    finally:
        delete(corral.client(), RG, "cli-file")


def test_delete_on_exit_flag(corral: CorralServer) -> None:
    client = corral.client()
    try:
        res = corral.cli("container", "create", "-g", RG, "-n", "cli-doe", "--image", "corral/busybox:latest",
                         "--command-line", "sh -c 'sleep 1; echo bye'", "--restart-policy", "Never",
                         "--delete-on-exit", "--no-wait", *SMALL, "-o", "json")
        assert json.loads(res.stdout)["properties"]["deleteOnExit"] is True
        deadline = time.monotonic() + 30
        while client.http.get(client.group_path(RG, "cli-doe"),
                              params={"api-version": "2023-05-01"}).status_code != 404:
            assert time.monotonic() < deadline, "the finished group was not deleted"
            time.sleep(0.2)
    finally:
        delete(client, RG, "cli-doe")


def test_sysctl_flags_reach_the_group_and_round_trip_through_export(corral: CorralServer, tmp_path: Path) -> None:
    client = corral.client()
    want = [{"name": "net.ipv4.ip_forward", "value": "1"},
            {"name": "net.ipv4.ip_local_port_range", "value": "32768 60999"}]
    try:
        res = corral.cli("container", "create", "-g", RG, "-n", "cli-sysctl", "--image", "corral/busybox:latest",
                         "--command-line", "sh -c 'cat /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/"
                         "ip_local_port_range; sleep 3600'", "--sysctl", "net.ipv4.ip_forward=1",
                         "--sysctl", "net.ipv4.ip_local_port_range=32768 60999", *SMALL, "-o", "json")
        assert json.loads(res.stdout)["properties"]["sysctls"] == want
        deadline = time.monotonic() + 10
        while "32768\t60999" not in corral.cli("container", "logs", "-g", RG, "-n", "cli-sysctl").stdout:
            assert time.monotonic() < deadline, "the group's network does not have its sysctls"
            time.sleep(0.2)
        exported = tmp_path / "sysctl.yaml"
        corral.cli("container", "export", "-g", RG, "-n", "cli-sysctl", "-f", str(exported))
        doc = yaml.safe_load(exported.read_text())
        assert doc["properties"]["sysctls"] == want
        doc["name"] = "cli-sysctl-copy"
        exported.write_text(yaml.safe_dump(doc))
        # A flag adds to the file's, and wins for its own name.
        res = corral.cli("container", "create", "-g", RG, "-f", str(exported), "--sysctl", "net.ipv4.ip_forward=0",
                         "--sysctl", "net.core.somaxconn=1024", "--no-wait", "-o", "json")
        assert json.loads(res.stdout)["properties"]["sysctls"] == [
            {"name": "net.ipv4.ip_forward", "value": "0"}, want[1], {"name": "net.core.somaxconn", "value": "1024"}]
        bad = corral.cli("container", "create", "-g", RG, "-n", "cli-sysctl-bad", "--image", "corral/busybox:latest",
                         "--sysctl", "net.ipv4.ip_forward", check=False)
        assert bad.returncode != 0 and "NAME=VALUE" in bad.stderr
        bad = corral.cli("container", "create", "-g", RG, "-n", "cli-sysctl-bad", "--image", "corral/busybox:latest",
                         "--sysctl", "kernel.shmmax=1", "--no-wait", check=False)
        assert bad.returncode != 0 and "kernel.shmmax" in bad.stderr + bad.stdout
    finally:
        delete(client, RG, "cli-sysctl")
        delete(client, RG, "cli-sysctl-copy")


def test_bad_flags_are_explained(corral: CorralServer) -> None:
    res = corral.cli("container", "create", "-g", RG, "-n", "cli-bad", "--image", "corral/busybox:latest",
                     "--ports", "80:http", check=False)
    assert res.returncode != 0 and "PUBLIC:CONTAINER" in res.stderr
    res = corral.cli("container", "exec", "-g", RG, "-n", "cli-bad", check=False)
    assert res.returncode != 0 and "--exec-command" in res.stderr
