"""The official azure-mgmt-containerinstance SDK drives a container group's whole life on Corral."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerinstance.models import (
    Container,
    ContainerGroup,
    EnvironmentVariable,
    ResourceRequests,
    ResourceRequirements,
)

IMAGE = "corral/busybox:latest"
RG = "sdk-rg"


def container(name: str, command: list[str], image: str = IMAGE, cpu: float = 0.1) -> Container:
    return Container(
        name=name, image=image, command=command,
        resources=ResourceRequirements(requests=ResourceRequests(cpu=cpu, memory_in_gb=0.1)),
        environment_variables=[EnvironmentVariable(name="GREETING", value="hello"),
                               EnvironmentVariable(name="SECRET", secure_value="s3cret")],
    )


def wait_state(aci, name: str, want: str, timeout: float = 30) -> ContainerGroup:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        g = aci.container_groups.get(RG, name)
        if g.instance_view.state == want or time.monotonic() > deadline:
            return g
        time.sleep(0.2)


def test_group_lifecycle_through_the_sdk(aci) -> None:  # type: ignore[no-untyped-def]
    group = ContainerGroup(
        location="local", os_type="Linux", restart_policy="Always",
        containers=[
            container("talker", ["sh", "-c", "echo $GREETING from talker; sleep 3600"]),
            container("sidecar", ["sh", "-c", "echo sidecar up; sleep 3600"]),
        ],
    )
    created = aci.container_groups.begin_create_or_update(RG, "sdk-life", group).result()
    assert created.provisioning_state == "Succeeded"

    g = aci.container_groups.get(RG, "sdk-life")
    assert g.instance_view.state == "Running"
    assert [c.instance_view.current_state.state for c in g.containers] == ["Running", "Running"]
    # Secrets never come back.
    env = {e.name: e for e in g.containers[0].environment_variables}
    assert env["SECRET"].secure_value is None and env["GREETING"].value == "hello"

    names = [x.name for x in aci.container_groups.list_by_resource_group(RG)]
    assert "sdk-life" in names
    assert "sdk-life" in [x.name for x in aci.container_groups.list()]

    deadline = time.monotonic() + 10
    while "hello from talker" not in (logs := aci.containers.list_logs(RG, "sdk-life", "talker").content):
        assert time.monotonic() < deadline, logs
        time.sleep(0.2)
    aci.containers.list_logs(RG, "sdk-life", "sidecar", tail=1)

    aci.container_groups.stop(RG, "sdk-life")
    g = wait_state(aci, "sdk-life", "Stopped")
    assert g.instance_view.state == "Stopped"

    aci.container_groups.begin_start(RG, "sdk-life").result()
    g = wait_state(aci, "sdk-life", "Running")
    assert [c.instance_view.current_state.state for c in g.containers] == ["Running", "Running"]

    before = {c.name: c.instance_view.current_state.start_time for c in g.containers}
    aci.container_groups.begin_restart(RG, "sdk-life").result()
    deadline = time.monotonic() + 20
    while True:
        g = aci.container_groups.get(RG, "sdk-life")
        after = {c.name: c.instance_view.current_state.start_time for c in g.containers}
        states = [c.instance_view.current_state.state for c in g.containers]
        if states == ["Running", "Running"] and all(after[n] != before[n] for n in before):
            break
        assert time.monotonic() < deadline, (states, before, after)
        time.sleep(0.2)

    aci.container_groups.begin_delete(RG, "sdk-life").result()
    with pytest.raises(ResourceNotFoundError):
        aci.container_groups.get(RG, "sdk-life")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda g: setattr(g.containers[0], "image", None), "image"),
        (lambda g: setattr(g.containers[0].resources.requests, "cpu", 0), "cpu"),
        (lambda g: setattr(g, "restart_policy", "Sometimes"), "restartPolicy"),
    ],
    ids=["missing-image", "cpu-zero", "unknown-restart-policy"],
)
def test_bad_input_gets_a_clear_4xx(aci, mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    group = ContainerGroup(location="local", os_type="Linux", containers=[container("c", ["true"])])
    mutate(group)
    with pytest.raises(HttpResponseError) as err:
        aci.container_groups.begin_create_or_update(RG, "sdk-bad", group).result()
    assert 400 <= err.value.status_code < 500
    assert needle in str(err.value.message)
    with pytest.raises(ResourceNotFoundError):
        aci.container_groups.get(RG, "sdk-bad")
