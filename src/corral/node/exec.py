"""Running commands inside a running container: captured, on a pty, and attaching to its output.

* ``exec_capture``: ``<runtime> exec`` with pipes; the runtime waits for the
  process and exits with its status (128+N when killed by signal N).
* ``exec_pty``: ``<runtime> exec --tty --console-socket``; the runtime sends
  the pty master over the socket (SCM_RIGHTS) and keeps running until the
  process exits, so its own exit status is the command's.
* ``attach``: the container's output, streamed from conmon's log file (the
  container was started without an stdin pipe, so attach is output-only).
"""

from __future__ import annotations

import array
import fcntl
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
from collections.abc import Callable, Iterator
from pathlib import Path

from corral.errors import Conflict, ExecTimeout, NotFound, RuntimeFailure
from corral.node.logs import follow_logs
from corral.node.runtime.runtime import Runtime

CONSOLE_TIMEOUT = 30.0


def _require_running(runtime: Runtime, cid: str) -> None:
    st = runtime.state(cid)
    if st.status == "absent":
        raise NotFound(f"container {cid} does not exist on this node")
    if st.status != "running":
        raise Conflict(f"container {cid} is {st.status}; exec needs a running container")


def _exec_args(
    runtime: Runtime,
    cid: str,
    argv: list[str],
    env: dict[str, str] | None,
    cwd: str | None,
    extra: list[str],
    workdir: Path,
    terminal: bool = False,
) -> tuple[list[str], Callable[[], None] | None]:
    """Runtime argv for an exec whose process inherits the container's (user, caps, env, limits)."""
    if not argv:
        raise ValueError("exec needs a command")
    try:
        config = json.loads((runtime.bundle(cid) / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise NotFound(f"container {cid} has no readable spec on this node: {e}") from e
    process = dict(config.get("process") or {})
    merged = {e.split("=", 1)[0]: e for e in process.get("env", [])}
    for key, val in (env or {}).items():
        merged[key] = f"{key}={val}"
    process.update(args=list(argv), env=list(merged.values()), terminal=terminal)
    process.pop("consoleSize", None)
    if cwd:
        process["cwd"] = cwd
    proc_file = workdir / "process.json"
    proc_file.write_text(json.dumps(process))
    return runtime.oci_command(cid, "exec", "--process", str(proc_file), *extra)


def _kill_exec(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def exec_capture(
    runtime: Runtime,
    cid: str,
    argv: list[str],
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    cwd: str | None = None,
) -> tuple[int, bytes, bytes]:
    """Run ``argv`` in ``cid``; return (exit code, stdout, stderr). Raises ExecTimeout on timeout."""
    _require_running(runtime, cid)
    with tempfile.TemporaryDirectory(prefix="corral-exec-") as tmp:
        pid_file = Path(tmp) / "pid"
        cmd, preexec = _exec_args(runtime, cid, argv, env, cwd, ["--pid-file", str(pid_file)], Path(tmp))
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            _kill_exec(pid_file)  # the process in the container, not only the runtime client
            proc.kill()
            proc.communicate()
            raise ExecTimeout(f"command {argv[0]!r} in container {cid} did not finish within {timeout}s") from e
    if proc.returncode != 0 and _runtime_error(err):
        raise RuntimeFailure(f"exec in container {cid} failed: {err.decode(errors='replace').strip()}")
    return proc.returncode, out, err


def _runtime_error(err: bytes) -> bool:
    """The runtime itself failed (e.g. no such executable) rather than the command."""
    text = err.decode(errors="replace")
    return text.startswith(("crun: ", "runc: ", "runsc: ")) or ("executable file" in text and "not found" in text)


def _set_winsize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, array.array("H", [rows, cols, 0, 0]))


class PtySession:
    """An interactive process in a container, on a pty whose master we hold."""

    def __init__(self, proc: subprocess.Popen[bytes], master_fd: int, tmpdir: str) -> None:
        self._proc = proc
        self.master_fd = master_fd
        self._tmpdir = tmpdir
        self._closed = False

    def fileno(self) -> int:
        return self.master_fd

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes | None:
        """Output bytes; b"" once the process has exited and output is drained; None on timeout."""
        ready, _, _ = select.select([self.master_fd], [], [], timeout)
        if not ready:
            return None
        try:
            return os.read(self.master_fd, size)
        except OSError:  # EIO: the slave side is closed (the process exited)
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master_fd, view)
            view = view[n:]

    def resize(self, rows: int, cols: int) -> None:
        _set_winsize(self.master_fd, rows, cols)

    def wait(self, timeout: float | None = None) -> int | None:
        """The command's exit code, waiting up to ``timeout``; None if still running."""
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    @property
    def exit_code(self) -> int | None:
        return self._proc.poll()

    def close(self) -> None:
        """Hang up: the process gets SIGHUP from the pty; kill it if it lingers."""
        if self._closed:
            return
        self._closed = True
        os.close(self.master_fd)
        if self._proc.poll() is None:
            try:
                self._proc.wait(2)
            except subprocess.TimeoutExpired:
                _kill_exec(Path(self._tmpdir) / "pid")
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._tmpdir, ignore_errors=True)

    def __enter__(self) -> PtySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exec_pty(
    runtime: Runtime,
    cid: str,
    argv: list[str],
    rows: int = 24,
    cols: int = 80,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> PtySession:
    """Start ``argv`` in ``cid`` on a new pty sized rows x cols; returns the session.

    crun hands us the container-side pty master over a console socket. runc
    only does that when detaching (losing the exit code) and this runsc build
    ignores the socket, so for those we give the runtime our own pty as its
    stdio and controlling terminal; both then run the process on a terminal
    and pass window-size changes on.
    """
    _require_running(runtime, cid)
    env = {"TERM": "xterm", **(env or {})}
    tmp = tempfile.mkdtemp(prefix="corral-pty-")
    try:
        if runtime.runtime_of(cid) == "crun":
            return _pty_via_console_socket(runtime, cid, argv, rows, cols, env, cwd, tmp)
        return _pty_via_own_terminal(runtime, cid, argv, rows, cols, env, cwd, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pty_via_console_socket(
    runtime: Runtime, cid: str, argv: list[str], rows: int, cols: int,
    env: dict[str, str], cwd: str | None, tmp: str,
) -> PtySession:  # fmt: skip
    sock_path = os.path.join(tmp, "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    proc: subprocess.Popen[bytes] | None = None
    try:
        srv.bind(sock_path)
        srv.listen(1)
        opts = ["--console-socket", sock_path, "--pid-file", os.path.join(tmp, "pid")]
        cmd, preexec = _exec_args(runtime, cid, argv, env, cwd, opts, Path(tmp), terminal=True)
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec
        )
        master = _receive_master(srv, proc)
        _set_winsize(master, rows, cols)
        return PtySession(proc, master, tmp)
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        raise
    finally:
        srv.close()


def _pty_via_own_terminal(
    runtime: Runtime, cid: str, argv: list[str], rows: int, cols: int,
    env: dict[str, str], cwd: str | None, tmp: str,
) -> PtySession:  # fmt: skip
    master, slave = os.openpty()
    try:
        _set_winsize(slave, rows, cols)
        opts = ["--pid-file", os.path.join(tmp, "pid")]
        cmd, preexec = _exec_args(runtime, cid, argv, env, cwd, opts, Path(tmp), terminal=True)

        def child_setup() -> None:
            if preexec is not None:
                preexec()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # so the runtime gets SIGWINCH on resize

        proc = subprocess.Popen(
            cmd, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=child_setup
        )
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return PtySession(proc, master, tmp)


def _receive_master(srv: socket.socket, proc: subprocess.Popen[bytes]) -> int:
    srv.settimeout(0.1)
    waited = 0.0
    while True:
        try:
            conn, _ = srv.accept()
            break
        except TimeoutError:
            waited += 0.1
            if proc.poll() is not None and not select.select([srv], [], [], 0)[0]:
                err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                raise RuntimeFailure(f"exec failed before opening a terminal: {err or proc.returncode}") from None
            if waited > CONSOLE_TIMEOUT:
                raise RuntimeFailure("the runtime did not hand over the exec terminal in time") from None
    with conn:
        conn.settimeout(CONSOLE_TIMEOUT)
        _msg, fds, _flags, _addr = socket.recv_fds(conn, 1024, 1)
    if not fds:
        raise RuntimeFailure("the runtime sent no terminal file descriptor")
    os.set_inheritable(fds[0], False)
    return fds[0]


def attach(
    runtime: Runtime,
    cid: str,
    stop: Callable[[], bool],
    timestamps: bool = False,
    tail: int | None = 0,
) -> Iterator[str]:
    """Stream the container's output lines from now on (``tail`` earlier lines first) until it exits.

    Output-only: read from conmon's log with follow, which also outlives agent restarts.
    """
    log = runtime.log_path(cid)
    if log is None:
        raise NotFound(f"container {cid} does not exist on this node")

    def done() -> bool:
        return stop() or runtime.state(cid).status not in ("running", "created")

    yield from follow_logs(log, done, timestamps=timestamps, tail=tail)
