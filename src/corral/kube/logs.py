"""Which lines of a container's Corral log ``kubectl logs`` shows: the current run, or with ``--previous``
the one before, as kubelet keeps one log per container instance; ``--since``/``--since-time`` cut further.

Corral keeps one log per container across its restarts, every line with its time, and the group's
instanceView the times of the current and the previous run, so a run is a time window of the log. The
boundary between two runs is halfway between the previous run's end and the current one's recorded start
(a run's first lines can precede its recorded start by a moment; restarts wait at least a second after a
crash). Earlier runs than the previous one are not told apart: the window starts a moment before the
previous run's recorded start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from corral.kube.status import instance_views, parse_time

RUN_SLACK = timedelta(milliseconds=500)


class NoPreviousRun(Exception):
    pass


@dataclass(frozen=True)
class LogWindow:
    start: datetime | None = None
    end: datetime | None = None  # exclusive

    @property
    def everything(self) -> bool:
        return self.start is None and self.end is None

    def admits(self, ts: datetime | None) -> bool:
        if ts is None:
            return True  # not a timestamped line: keep it with its neighbours
        return (self.start is None or ts >= self.start) and (self.end is None or ts < self.end)

    def since(self, t: datetime | None) -> LogWindow:
        if t is None or (self.start is not None and self.start >= t):
            return self
        return LogWindow(t, self.end)


def container_view(group: dict[str, Any] | None, container: str) -> dict[str, Any] | None:
    for key in ("containers", "initContainers"):
        if (view := instance_views(group, key).get(container)) is not None:
            return view
    return None


def run_window(view: dict[str, Any] | None, previous: bool) -> LogWindow:
    """The window of the current run (or the previous, raising NoPreviousRun when there is none) from the
    container's instanceView. A container waiting to start again shows its last run, as kubelet does."""
    view = view or {}
    cur, prev = view.get("currentState") or {}, view.get("previousState") or {}
    cur_start = parse_time(cur.get("startTime")) if cur.get("state") in ("Running", "Terminated") else None
    prev_start, prev_end = parse_time(prev.get("startTime")), parse_time(prev.get("finishTime"))
    if prev_start is None:
        if previous:
            raise NoPreviousRun
        return LogWindow()
    boundary = None
    if cur_start is not None:
        boundary = prev_end + (cur_start - prev_end) / 2 if prev_end and prev_end < cur_start else cur_start
    if previous or cur_start is None:
        return LogWindow(prev_start - RUN_SLACK, boundary)
    return LogWindow(boundary, None)


def since_time(query: Any, now: datetime | None = None) -> datetime | None:
    """kubelet's ``sinceSeconds`` / ``sinceTime`` (RFC 3339) as a point in time; ValueError if unreadable."""
    if query.get("sinceSeconds"):
        seconds = int(query["sinceSeconds"])
        if seconds < 1:
            raise ValueError("sinceSeconds must be greater than 0")
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    if query.get("sinceTime"):
        t = parse_time(query["sinceTime"])
        if t is None:
            raise ValueError(f"sinceTime {query['sinceTime']!r} is not an RFC 3339 time")
        return t
    return None


def _line(raw: str, window: LogWindow, timestamps: bool) -> str | None:
    """A timestamped log line as the client wants it, or None when outside the window."""
    stamp, sep, rest = raw.partition(" ")
    ts = parse_time(stamp) if sep else None
    if not window.admits(ts):
        return None
    return raw if timestamps or ts is None else rest


def select(text: str, window: LogWindow, timestamps: bool, tail: int | None) -> str:
    """The lines of ``text`` (read with timestamps) inside the window, the last ``tail`` of them."""
    kept: deque[str] = deque(maxlen=tail) if tail is not None else deque()
    for raw in text.splitlines(keepends=True):
        if (line := _line(raw, window, timestamps)) is not None:
            kept.append(line)
    return "".join(kept)


async def select_stream(chunks: AsyncIterator[bytes], window: LogWindow, timestamps: bool) -> AsyncIterator[bytes]:
    """``select`` for a followed log, line by line as it comes."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        out = [line for raw in lines if (line := _line(raw.decode(errors="replace") + "\n", window, timestamps))]
        if out:
            yield "".join(out).encode()
    if pending and (line := _line(pending.decode(errors="replace"), window, timestamps)):
        yield line.encode()
