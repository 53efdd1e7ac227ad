"""Reading conmon's k8s-file container logs: whole output, tail, since, and live follow.

Each line on disk is ``<RFC3339Nano time> <stdout|stderr> <F|P> <text>``; ``P``
marks a fragment of a longer line that continues on the next record, ``F``
the end of a line.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from corral.node.runtime.inotify import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE_SELF,
    IN_MODIFY,
    IN_MOVE_SELF,
    IN_MOVED_TO,
    Inotify,
)

FOLLOW_WAKE = 0.25  # seconds between stop() checks when no data arrives


@dataclass(frozen=True)
class LogLine:
    timestamp: str  # as conmon wrote it (first fragment's time)
    stream: str
    text: str

    def render(self, timestamps: bool) -> str:
        return f"{self.timestamp} {self.text}\n" if timestamps else f"{self.text}\n"


def parse_time(ts: str) -> datetime | None:
    """Parse conmon's RFC3339 with nanoseconds (Python keeps microseconds)."""
    try:
        date, _, rest = ts.partition("T")
        clock = rest
        tz = "+00:00"
        for i, ch in enumerate(rest):
            if ch in "+-Z" and i > 0:
                clock, tz = rest[:i], rest[i:]
                break
        if tz == "Z":
            tz = "+00:00"
        main, _, frac = clock.partition(".")
        frac = (frac + "000000")[:6]
        return datetime.fromisoformat(f"{date}T{main}.{frac}{tz}")
    except ValueError:
        return None


class _Assembler:
    """Joins P fragments into full lines; one pending fragment list per stream."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, list[str]]] = {}

    def feed(self, raw: str) -> LogLine | None:
        parts = raw.split(" ", 3)
        if len(parts) < 3:
            return None  # not a k8s-file record
        ts, stream, tag = parts[0], parts[1], parts[2]
        text = parts[3] if len(parts) > 3 else ""
        first_ts, frags = self._pending.get(stream, (ts, []))
        frags.append(text)
        if tag == "P":
            self._pending[stream] = (first_ts, frags)
            return None
        self._pending.pop(stream, None)
        return LogLine(first_ts, stream, "".join(frags))

    def flush(self) -> list[LogLine]:
        out = [LogLine(ts, stream, "".join(frags)) for stream, (ts, frags) in self._pending.items()]
        self._pending.clear()
        return out


def parse_lines(raw_lines: Iterable[str]) -> Iterator[LogLine]:
    asm = _Assembler()
    for raw in raw_lines:
        line = asm.feed(raw.rstrip("\n"))
        if line is not None:
            yield line
    yield from asm.flush()


def _select(lines: Iterable[LogLine], tail: int | None, since: datetime | None) -> list[LogLine]:
    if since is not None:
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        lines = (ln for ln in lines if (t := parse_time(ln.timestamp)) is None or t >= since)
    if tail is not None:
        return list(deque(lines, maxlen=max(0, tail))) if tail > 0 else []
    return list(lines)


def read_logs(path: Path, tail: int | None = None, timestamps: bool = False, since: datetime | None = None) -> str:
    """The container's output as text, one line per full log line; "" if there is no log yet."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            chosen = _select(parse_lines(f), tail, since)
    except FileNotFoundError:
        return ""
    return "".join(ln.render(timestamps) for ln in chosen)


def follow_logs(
    path: Path,
    stop: Callable[[], bool],
    timestamps: bool = False,
    tail: int | None = None,
    since: datetime | None = None,
) -> Iterator[str]:
    """Yield existing lines (after ``tail``/``since``), then each new line as it is written.

    Wakes on inotify (file modified, or re-created by a container restart); a
    file that shrinks (truncated) or is replaced (rotated) is read again from
    its start. Ends when ``stop()`` returns True.
    """
    path = Path(path)
    # Right after a create the node may not have made the container's log directory yet.
    while not path.parent.is_dir():
        if stop():
            return
        time.sleep(FOLLOW_WAKE / 5)
    with Inotify() as ino:
        ino.add_watch(path.parent, IN_CREATE | IN_MOVED_TO | IN_CLOSE_WRITE | IN_MODIFY)
        f = None
        ino_id: tuple[int, int] | None = None
        buf = ""
        asm = _Assembler()
        first = True
        draining = False
        try:
            while True:
                if f is None:
                    try:
                        f = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - kept across loop
                        st = os.fstat(f.fileno())
                        ino_id = (st.st_dev, st.st_ino)
                        try:
                            ino.add_watch(path, IN_MODIFY | IN_DELETE_SELF | IN_MOVE_SELF)
                        except OSError:
                            pass
                    except FileNotFoundError:
                        f = None
                if f is not None:
                    if first:
                        first = False
                        existing: list[LogLine] = []
                        for raw in f:
                            if raw.endswith("\n"):
                                ln = asm.feed(raw[:-1])
                                if ln is not None:
                                    existing.append(ln)
                            else:
                                buf = raw
                        for ln in _select(existing, tail, since):
                            yield ln.render(timestamps)
                    else:
                        chunk = f.read()
                        if chunk:
                            buf += chunk
                            *complete, buf = buf.split("\n")
                            for raw in complete:
                                ln = asm.feed(raw)
                                if ln is not None:
                                    yield ln.render(timestamps)
                    # Truncated in place, or replaced by a new file: start over on the current one.
                    try:
                        st = os.stat(path)
                        cur = (st.st_dev, st.st_ino)
                    except FileNotFoundError:
                        cur = None
                    if cur is not None and (cur != ino_id or st.st_size < f.tell()):
                        if cur == ino_id:
                            f.seek(0)
                        else:
                            f.close()
                            f = None
                        buf = ""
                        asm = _Assembler()
                        continue
                elif first and tail is not None:
                    first = False
                if draining:
                    return
                if stop():
                    # One more pass: lines written just before the stop condition still count.
                    draining = True
                    continue
                ino.wait(FOLLOW_WAKE)
        finally:
            if f is not None:
                f.close()
