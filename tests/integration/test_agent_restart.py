"""A killed agent leaves containers running; the next one adopts them. A restarted server loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from corral_server import CorralServer, running_corral
from groups import container, container_cgroup, delete, exec_sync, get, group, put, state, view, wait_for

RG = "it-restart"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CorralServer]:
    with running_corral(tmp_path, bridge="ctest1", subnet="10.67.0.0/16",
                        cgroup_parent="/corral-test-restart") as srv:
        yield srv


def _pids(cgroup_parent: str, name: str) -> set[int]:
    procs = Path(container_cgroup("pids", cgroup_parent, name)) / "cgroup.procs"
    return {int(p) for p in procs.read_text().split()}


def test_killed_agent_leaves_containers_running_and_new_one_adopts_them(server: CorralServer) -> None:
    client = server.client()
    put(client, RG, "survivor", group(container("keep", ["sh", "-c", "echo started; sleep 3600"]),
                                      container("crashy", ["sh", "-c", "sleep 2; exit 1"]),
                                      restartPolicy="OnFailure"))
    before = _pids(server.cgroup_parent, "keep")
    server.kill()  # SIGKILL: no clean shutdown of the agent or the API

    # The containers do not notice.
    assert _pids(server.cgroup_parent, "keep") == before

    server.start()
    client = server.client()
    g = wait_for(client, RG, "survivor", lambda g: view(g, "crashy")["restartCount"] >= 1, timeout=30)
    # Adopted, not restarted: the same processes, the same start, no restart counted.
    assert state(g, "keep") == "Running" and view(g, "keep")["restartCount"] == 0
    assert _pids(server.cgroup_parent, "keep") == before
    assert exec_sync(client, RG, "survivor", "keep", "echo", "adopted")["stdout"] == "adopted\n"
    logs = client.request("GET", client.group_path(RG, "survivor") + "/containers/keep/logs").json()
    assert logs["content"] == "started\n"
    delete(client, RG, "survivor")


def test_restarted_server_keeps_every_group(server: CorralServer) -> None:
    client = server.client()
    names = [f"kept-{i}" for i in range(3)]
    for n in names:
        put(client, RG, n, group(container(n, ["sleep", "3600"]), tags={"n": n}) | {"tags": {"n": n}})
    client.request("POST", client.group_path(RG, names[2]) + "/stop")
    wait_for(client, RG, names[2], lambda g: g["properties"]["instanceView"]["state"] == "Stopped")
    old = {n: get(client, RG, n) for n in names}

    server.stop()
    server.start()
    client = server.client()
    listed = {g["name"] for g in client.request("GET", client.group_path(RG)).json()["value"]}
    assert listed == set(names)
    for n in names:
        g = get(client, RG, n)
        assert g["id"] == old[n]["id"] and g["tags"] == {"n": n}
        assert g["properties"]["containers"] == old[n]["properties"]["containers"] or \
            g["properties"]["containers"][0]["properties"]["image"] == "corral/busybox:latest"
    assert get(client, RG, names[0])["properties"]["instanceView"]["state"] == "Running"
    assert get(client, RG, names[2])["properties"]["instanceView"]["state"] == "Stopped"
    for n in names:
        delete(client, RG, n)


def test_group_deleted_while_agent_was_down_is_cleaned_up(server: CorralServer) -> None:
    client = server.client()
    put(client, RG, "orphan", group(container("orphan", ["sleep", "3600"])))
    uid = Path(container_cgroup("memory", server.cgroup_parent, "orphan")).parent.name
    server.kill()
    # Remove the record behind the agent's back, as if deleted by another control plane replica.
    from corral.model.records import GROUPS
    from corral.store.sqlite import SqliteStore

    store = SqliteStore(server.data_dir / "control" / "store.db")
    for rec in store.list(GROUPS):
        if rec.value["meta"]["uid"] == uid:
            store.delete(rec.key)
    store.close()
    server.start()
    wait = server.client()
    assert wait.request("GET", wait.group_path(RG)).json()["value"] == []
    assert not list(Path(f"/sys/fs/cgroup/memory{server.cgroup_parent}").glob(f"{uid}"))
