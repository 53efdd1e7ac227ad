"""The official SDK's exec (websocket), attach, logs with tail, and in-place update against Corral."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator

import pytest
from azure.mgmt.containerinstance import ContainerInstanceManagementClient
from azure.mgmt.containerinstance.models import (
    Container,
    ContainerExecRequest,
    ContainerExecRequestTerminalSize,
    ContainerGroup,
    EnvironmentVariable,
    ResourceRequests,
    ResourceRequirements,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

IMAGE = "corral/busybox:latest"
RG = "sdk-access-rg"


def container(name: str, command: list[str], env: dict[str, str] | None = None) -> Container:
    return Container(
        name=name, image=IMAGE, command=command,
        resources=ResourceRequirements(requests=ResourceRequests(cpu=0.1, memory_in_gb=0.1)),
        environment_variables=[EnvironmentVariable(name=k, value=v) for k, v in (env or {}).items()],
    )


@pytest.fixture
def running(aci: ContainerInstanceManagementClient) -> Iterator[str]:
    name = "sdk-access"
    group = ContainerGroup(
        location="local", os_type="Linux",
        containers=[
            container("app", ["sh", "-c", "for i in 1 2 3 4 5 6; do echo line $i; done; echo $MODE; sleep 3600"],
                      {"MODE": "blue"}),
            container("helper", ["sleep", "3600"], {"ROLE": "helper"}),
        ],
    )
    aci.container_groups.begin_create_or_update(RG, name, group).result()
    try:
        yield name
    finally:
        aci.container_groups.begin_delete(RG, name).result()


def open_socket(uri: str, ca_cert: str | None) -> ClientConnection:
    ctx = ssl.create_default_context(cafile=ca_cert) if uri.startswith("wss://") else None
    return connect(uri, ssl=ctx, proxy=None, open_timeout=10)


def test_execute_command_gives_a_websocket_shell(aci, corral, running: str) -> None:  # type: ignore[no-untyped-def]
    request = ContainerExecRequest(command="/bin/sh", terminal_size=ContainerExecRequestTerminalSize(rows=24, cols=80))
    resp = aci.containers.execute_command(RG, running, "app", request)
    assert resp.web_socket_uri.startswith("wss://") and resp.password
    with open_socket(resp.web_socket_uri, corral.config.ca_cert) as ws:
        ws.send(resp.password)
        ws.send("echo hi; exit\n")
        out = ""
        try:
            while True:
                msg = ws.recv(timeout=20)
                out += msg if isinstance(msg, str) else msg.decode()
        except ConnectionClosed:
            pass
    assert "\nhi\r\n" in out.replace("echo hi", "")
    assert json.loads(ws.close_reason) == {"exitCode": 0}


def test_attach_gives_a_websocket_of_the_output(aci, corral, running: str) -> None:  # type: ignore[no-untyped-def]
    resp = aci.containers.attach(RG, running, "app")
    assert resp.web_socket_uri.startswith("wss://") and resp.password
    with open_socket(resp.web_socket_uri, corral.config.ca_cert) as ws:
        ws.send(resp.password)
        # Nothing is printed any more (the container sleeps): the session stays open, quietly.
        with pytest.raises(TimeoutError):
            ws.recv(timeout=1)


def test_list_logs_with_tail(aci, running: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    while "blue" not in aci.containers.list_logs(RG, running, "app").content:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert aci.containers.list_logs(RG, running, "app", tail=3).content == "line 5\nline 6\nblue\n"
    stamped = aci.containers.list_logs(RG, running, "app", tail=1, timestamps=True).content
    assert stamped.endswith(" blue\n") and stamped.startswith("20")


def test_in_place_update_of_one_containers_environment(aci, running: str) -> None:  # type: ignore[no-untyped-def]
    before = aci.container_groups.get(RG, running)
    helper_start = before.containers[1].instance_view.current_state.start_time
    group = ContainerGroup(
        location="local", os_type="Linux",
        containers=[
            container("app", ["sh", "-c", "for i in 1 2 3 4 5 6; do echo line $i; done; echo $MODE; sleep 3600"],
                      {"MODE": "green"}),
            container("helper", ["sleep", "3600"], {"ROLE": "helper"}),
        ],
    )
    puts: list[int] = []

    def record(response) -> None:  # type: ignore[no-untyped-def]
        if response.http_request.method == "PUT":
            puts.append(response.http_response.status_code)

    updated = aci.container_groups.begin_create_or_update(RG, running, group, raw_response_hook=record).result()
    assert puts == [200]  # an update of the existing group, not a create
    assert {e.name: e.value for e in updated.containers[0].environment_variables} == {"MODE": "green"}
    deadline = time.monotonic() + 20
    while "green" not in aci.containers.list_logs(RG, running, "app").content:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    after = aci.container_groups.get(RG, running)
    assert {e.name: e.value for e in after.containers[0].environment_variables} == {"MODE": "green"}
    # Only the changed container was replaced.
    assert after.containers[1].instance_view.current_state.start_time == helper_start
