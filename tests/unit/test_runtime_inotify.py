"""The inotify binding and the exit watcher's file conventions (no containers needed)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from corral.node.runtime import caps
from corral.node.runtime.conmon import conmon_argv
from corral.node.runtime.inotify import IN_CLOSE_WRITE, IN_MOVED_TO, Inotify
from corral.node.runtime.runtime import ExitWatcher, check_id


def test_inotify_reports_created_files(tmp_path: Path) -> None:
    with Inotify() as ino:
        ino.add_watch(tmp_path, IN_CLOSE_WRITE | IN_MOVED_TO)
        assert ino.wait(0) == []
        (tmp_path / "a").write_text("1")
        events = ino.wait(5)
    assert [(p, n) for p, n, _ in events] == [(tmp_path, "a")]


def test_exit_watcher_sees_atomic_writes(tmp_path: Path) -> None:
    with ExitWatcher(tmp_path) as watcher:

        def write() -> None:
            tmp = tmp_path / ".exit.tmp"
            tmp.write_text("3")
            os.replace(tmp, tmp_path / "ctr-1")

        t = threading.Thread(target=write)
        t.start()
        seen: list[str] = []
        while "ctr-1" not in seen:
            got = watcher.wait(5)
            assert got or seen, "no event within 5s"
            seen += got
        t.join()
    assert ".exit.tmp" not in seen


def test_container_ids() -> None:
    check_id("abc-1.2_x")
    for bad in ["", "-x", "a/b", "a" * 129, "x y"]:
        try:
            check_id(bad)
        except Exception as e:  # noqa: BLE001
            assert "invalid" in str(e)
        else:
            raise AssertionError(f"{bad!r} accepted")


def test_conmon_argv(tmp_path: Path) -> None:
    argv = conmon_argv(
        cid="c1", runtime_path="/usr/bin/crun", runtime_args=["--root", "/r"], bundle=tmp_path,
        log_path=tmp_path / "c.log", exits_dir=tmp_path / "exits", sock_dir=tmp_path / "sock",
        terminal=True, log_size_max=1000,
    )  # fmt: skip
    joined = " ".join(argv)
    assert f"k8s-file:{tmp_path / 'c.log'}" in argv
    assert "--runtime-arg --root --runtime-arg /r" in joined
    assert "-t" in argv and "--log-size-max 1000" in joined
    assert f"--persist-dir {tmp_path / 'persist'}" in joined


def test_capset_bits_match_proc_format() -> None:
    assert caps.capset_bits(["CAP_CHOWN", "CAP_NET_RAW"]) == (1 << 0) | (1 << 13)
    assert caps.normalize("net_raw") == "CAP_NET_RAW"
