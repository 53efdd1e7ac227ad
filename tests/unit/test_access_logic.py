"""Pure logic of the access routes: one-time session tickets, exec request parsing, and the event stream's
diffing of group state, driven by a real SQLite store."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from corral.api.access import RESIZE, ExecRequest, Ticket, TicketBook
from corral.api.events import GroupFilter, GroupWatch, sse
from corral.cli.terminal import resize_frame
from corral.model.records import GroupMeta, GroupRecord, group_key, status_key
from corral.model.status import ContainerStateView, ContainerStatus, GroupStatus, record_event
from corral.store.sqlite import SqliteStore

SUB = "00000000-0000-0000-0000-000000000000"


def test_a_ticket_is_redeemed_once_and_only_with_its_password() -> None:
    book = TicketBook()
    sid, password = book.issue(Ticket("exec", "n1", "uid", "c", ["sh"]))
    assert book.redeem(sid, "wrong") is None
    ticket = book.redeem(sid, password)
    assert ticket is not None and ticket.argv == ["sh"]
    assert book.redeem(sid, password) is None
    assert book.redeem("other", password) is None


def test_a_ticket_expires() -> None:
    book = TicketBook(ttl=0.05)
    sid, password = book.issue(Ticket("attach", "n1", "uid", "c"))
    time.sleep(0.1)
    assert book.redeem(sid, password) is None


def test_passwords_differ_per_session() -> None:
    book = TicketBook()
    issued = [book.issue(Ticket("exec", "n", "u", "c")) for _ in range(20)]
    assert len({p for _, p in issued}) == 20 and len({s for s, _ in issued}) == 20


def test_exec_command_is_a_command_line_or_an_argv() -> None:
    assert ExecRequest.model_validate({"command": "/bin/sh"}).argv() == ["/bin/sh"]
    assert ExecRequest.model_validate({"command": "sh -c 'echo a b'"}).argv() == ["sh", "-c", "echo a b"]
    assert ExecRequest.model_validate({"command": ["ls", "-l"]}).argv() == ["ls", "-l"]
    for bad in ({"command": ""}, {"command": []}, {}, {"command": "sh", "terminalSize": {"rows": 0, "cols": 80}}):
        with pytest.raises(ValidationError):
            ExecRequest.model_validate(bad)


def test_resize_frames_round_trip() -> None:
    m = RESIZE.fullmatch(resize_frame(50, 132))
    assert m is not None and (int(m[1]), int(m[2])) == (50, 132)
    assert RESIZE.fullmatch(b"echo \x1b[8;50;132t") is None  # only a frame of its own is a resize


def test_group_filter() -> None:
    one = GroupFilter(SUB, "RG", "Web")
    assert one.matches(group_key(SUB, "rg", "web"))
    assert not one.matches(group_key(SUB, "rg", "web2"))
    everything = GroupFilter(SUB, "rg")
    assert everything.matches(group_key(SUB, "RG", "x"))
    assert not everything.matches(group_key(SUB, "rg2", "x"))


def _record(name: str, uid: str) -> GroupRecord:
    return GroupRecord.model_validate({
        "spec": {"location": "local", "properties": {"containers": [
            {"name": "c", "properties": {"image": "busybox", "resources": {"requests": {"cpu": 1, "memoryInGB": 1}}}},
        ]}},
        "meta": GroupMeta(uid=uid, subscription=SUB, resourceGroup="rg", name=name,
                          createdAt=datetime.now(UTC), node="n1").model_dump(mode="json"),
    })


def test_group_watch_sends_only_what_changed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    try:
        key = group_key(SUB, "rg", "web")
        store.put(key, _record("web", "u1").dump())
        store.put(group_key(SUB, "other", "web"), _record("web", "u2").dump())
        watch = GroupWatch(store, GroupFilter(SUB, "rg"))
        rev, opening = watch.snapshot()
        assert [k for k, _ in opening] == ["group", "container"]
        assert opening[0][1]["state"] == "Pending"

        status = GroupStatus(uid="u1", node="n1", observedGeneration=1, state="Running")
        status.containers["c"] = ContainerStatus(currentState=ContainerStateView(state="Running"))
        record_event(status.containers["c"].events, "Started", "started container c")
        store.put(status_key("u1"), status.model_dump(mode="json"))
        out = watch.apply(store.watch("/", rev, 1))
        kinds = {k: d for k, d in out}
        assert kinds["group"]["state"] == "Running" and kinds["container"]["state"] == "Running"
        assert kinds["event"]["event"]["name"] == "Started" and kinds["event"]["container"] == "c"
        assert kinds["event"]["name"] == "web"
        rev = store.revision()

        # The same status again: nothing to say. A repeated event: its count.
        store.put(status_key("u1"), status.model_dump(mode="json"))
        assert watch.apply(store.watch("/", rev, 1)) == []
        rev = store.revision()
        record_event(status.containers["c"].events, "Started", "started container c")
        store.put(status_key("u1"), status.model_dump(mode="json"))
        out = watch.apply(store.watch("/", rev, 1))
        assert [(k, d["event"]["count"]) for k, d in out] == [("event", 2)]
        rev = store.revision()

        # Another resource group's changes are not shown; a delete is.
        store.put(status_key("u2"), GroupStatus(uid="u2", node="n1", state="Running").model_dump(mode="json"))
        store.delete(key)
        out = watch.apply(store.watch("/", rev, 1))
        assert out == [("deleted", {"id": kinds["group"]["id"], "name": "web", "resourceGroup": "rg"})]
    finally:
        store.close()


def test_sse_framing() -> None:
    assert sse("group", {"a": 1}, 7) == 'id: 7\nevent: group\ndata: {"a":1}\n\n'
