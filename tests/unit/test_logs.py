"""k8s-file log parsing and following."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from corral.node.logs import follow_logs, parse_time, read_logs

LOG = (
    "2026-11-21T23:31:46.100000001+00:00 stdout F first\n"
    "2026-11-21T23:31:47.200000000+00:00 stdout P par\n"
    "2026-11-21T23:31:47.300000000+00:00 stderr F err line\n"
    "2026-11-21T23:31:47.400000000+00:00 stdout F tial\n"
    "2026-11-21T23:31:48.000000000+00:00 stdout F \n"
    "2026-11-21T23:31:49.000000000+00:00 stdout F last one\n"
)


def test_read_joins_partials_and_tails(tmp_path: Path) -> None:
    p = tmp_path / "c.log"
    p.write_text(LOG)
    assert read_logs(p) == "first\nerr line\npartial\n\nlast one\n"
    assert read_logs(p, tail=2) == "\nlast one\n"
    assert read_logs(p, tail=0) == ""
    stamped = read_logs(p, tail=1, timestamps=True)
    assert stamped == "2026-11-21T23:31:49.000000000+00:00 last one\n"
    # The joined line carries its first fragment's time.
    assert "2026-11-21T23:31:47.200000000+00:00 partial" in read_logs(p, timestamps=True)


def test_since_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "c.log"
    p.write_text(LOG)
    since = datetime(2026, 11, 21, 23, 31, 47, 350000, tzinfo=UTC)
    assert read_logs(p, since=since) == "\nlast one\n"
    assert read_logs(tmp_path / "none.log") == ""


def test_parse_time() -> None:
    t = parse_time("2026-11-21T23:31:46.390566156+00:00")
    assert t == datetime(2026, 11, 21, 23, 31, 46, 390566, tzinfo=UTC)
    assert parse_time("2026-11-21T23:31:46Z") == datetime(2026, 11, 21, 23, 31, 46, tzinfo=UTC)
    assert parse_time("garbage") is None


def _collect(path: Path, stop: threading.Event, out: list[str], **kw: object) -> threading.Thread:
    def run() -> None:
        for line in follow_logs(path, stop.is_set, **kw):  # type: ignore[arg-type]
            out.append(line)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _wait_for(cond: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_follow_streams_new_lines_and_survives_truncation(tmp_path: Path) -> None:
    p = tmp_path / "c.log"
    p.write_text("2026-11-21T23:31:46.1+00:00 stdout F old\n")
    stop = threading.Event()
    out: list[str] = []
    t = _collect(p, stop, out, tail=1)
    try:
        assert _wait_for(lambda: out == ["old\n"])
        with open(p, "a") as f:
            f.write("2026-11-21T23:31:47.1+00:00 stdout P ne")
            f.flush()
            time.sleep(0.05)
            f.write("\n2026-11-21T23:31:47.2+00:00 stdout F w\n")
        assert _wait_for(lambda: out == ["old\n", "new\n"])
        # A restarted container truncates the file and writes from the start.
        p.write_text("2026-11-21T23:31:50.1+00:00 stdout F after restart\n")
        assert _wait_for(lambda: out[-1:] == ["after restart\n"])
        # Rotation: the file is replaced by a new one.
        p.rename(tmp_path / "c.log.1")
        p.write_text("2026-11-21T23:31:51.1+00:00 stdout F rotated\n")
        assert _wait_for(lambda: out[-1:] == ["rotated\n"])
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()


def test_follow_waits_for_file_to_appear(tmp_path: Path) -> None:
    p = tmp_path / "later.log"
    stop = threading.Event()
    out: list[str] = []
    t = _collect(p, stop, out, timestamps=True)
    try:
        time.sleep(0.05)
        p.write_text("2026-11-21T23:31:46.1+00:00 stdout F hello\n")
        assert _wait_for(lambda: out == ["2026-11-21T23:31:46.1+00:00 hello\n"])
    finally:
        stop.set()
        t.join(5)


def test_follow_waits_for_the_log_directory_to_appear(tmp_path: Path) -> None:
    """A follow right after a create, before the node made the container's log directory."""
    p = tmp_path / "logs" / "main.log"
    stop = threading.Event()
    out: list[str] = []
    t = _collect(p, stop, out)
    try:
        time.sleep(0.1)
        assert t.is_alive()
        p.parent.mkdir()
        p.write_text("2026-11-21T23:31:46.1+00:00 stdout F hello\n")
        assert _wait_for(lambda: out == ["hello\n"])
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()
