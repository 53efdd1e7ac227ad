"""Client side of ACI exec/attach websockets: a real terminal for `corral container exec`, output for attach.

The server sends the exit code of an exec'd process in the close frame's
reason (``{"exitCode": N}``); a resize is sent as xterm's own "resize
window" sequence ``ESC [ 8 ; rows ; cols t`` alone in a frame (see docs/api.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import ssl
import sys
import termios
import threading
import tty
from collections.abc import Iterator

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from corral.errors import CorralError
from corral.fileio import write_fd


class SessionFailed(CorralError):
    """The exec/attach websocket could not be opened or was refused."""

    code = "SessionFailed"


def terminal_size(fd: int = 1) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``, or the usual 24x80."""
    try:
        cols, rows = os.get_terminal_size(fd)
        return rows, cols
    except OSError:
        size = shutil.get_terminal_size()
        return size.lines, size.columns


def resize_frame(rows: int, cols: int) -> bytes:
    return f"\x1b[8;{rows};{cols}t".encode()


def open_session(uri: str, password: str, ca_cert: str | None) -> ClientConnection:
    """Connect and authenticate with the one-time password (the first frame)."""
    context = None
    if uri.startswith("wss://"):
        context = ssl.create_default_context(cafile=ca_cert) if ca_cert else ssl.create_default_context()
    try:
        # proxy=None: the session goes straight to the Corral server, never through an environment proxy.
        conn = connect(uri, ssl=context, proxy=None, open_timeout=10, max_size=None, legacy=True)
    except Exception as exc:  # OSError, ssl errors, websockets' handshake errors: all mean the same here
        raise SessionFailed(f"could not open the session websocket {uri}: {exc}") from exc
    conn.send(password)
    return conn


def exit_code(conn: ClientConnection) -> int | None:
    """The exec'd process's exit code from the server's close frame, if it sent one."""
    close = conn.protocol.close_rcvd
    if close is None:
        return None
    if close.code == 1008:
        raise SessionFailed(f"the server refused the session: {close.reason}")
    try:
        code = json.loads(close.reason or "{}").get("exitCode")
    except (ValueError, AttributeError):
        code = None
    return code if isinstance(code, int) else None


def _frames(conn: ClientConnection) -> Iterator[bytes]:
    for msg in conn:
        yield msg.encode() if isinstance(msg, str) else msg


def stream_output(conn: ClientConnection, out_fd: int = 1) -> int | None:
    """Copy frames to ``out_fd`` until the server closes; the exit code it sent, if any."""
    try:
        for data in _frames(conn):
            write_fd(out_fd, data)
    except ConnectionClosed:
        pass  # closed abnormally: whatever close frame arrived still tells
    return exit_code(conn)


class _Input(threading.Thread):
    """Sends what is typed (and window size changes) to the session until told to stop."""

    def __init__(self, conn: ClientConnection, in_fd: int, out_fd: int) -> None:
        super().__init__(name="corral-exec-input", daemon=True)
        self.conn, self.in_fd, self.out_fd = conn, in_fd, out_fd
        self.wake_r, self.wake_w = os.pipe()
        self.resized = threading.Event()
        self.done = threading.Event()

    def notify_resize(self) -> None:
        self.resized.set()
        os.write(self.wake_w, b"r")  # a signal handler only pokes the pipe; this thread does the sending

    def stop(self) -> None:
        self.done.set()
        os.write(self.wake_w, b"x")
        if self.ident is not None:
            self.join(2)
        os.close(self.wake_r)
        os.close(self.wake_w)

    def run(self) -> None:
        try:
            while not self.done.is_set():
                ready, _, _ = select.select([self.in_fd, self.wake_r], [], [])
                if self.wake_r in ready:
                    os.read(self.wake_r, 64)
                if self.resized.is_set():
                    self.resized.clear()
                    self.conn.send(resize_frame(*terminal_size(self.out_fd)))
                if self.in_fd in ready and not self.done.is_set():
                    data = os.read(self.in_fd, 4096)
                    if not data:
                        return  # end of input: leave the session to end by itself
                    self.conn.send(data)
        except (ConnectionClosed, OSError):
            return


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Raw mode (keys go to the remote shell as typed, Ctrl-C included), restored on the way out."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)  # keep what was typed ahead
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def interactive(conn: ClientConnection, in_fd: int | None = None, out_fd: int | None = None) -> int:
    """Run a terminal session: raw local tty, input and resizes to the server, output to the screen.

    Returns the remote process's exit code (255 when the server did not say).
    """
    in_fd = sys.stdin.fileno() if in_fd is None else in_fd
    out_fd = sys.stdout.fileno() if out_fd is None else out_fd
    pump = _Input(conn, in_fd, out_fd)
    previous = signal.signal(signal.SIGWINCH, lambda *_: pump.notify_resize())
    try:
        with raw_terminal(in_fd):
            pump.start()
            code = stream_output(conn, out_fd)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        pump.stop()
        conn.close()
    return 255 if code is None else code
