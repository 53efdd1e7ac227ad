"""Launching conmon: the per-container monitor that outlives the agent and records the exit code."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from corral.errors import RuntimeFailure

CONMON = shutil.which("conmon") or "/usr/bin/conmon"
SYNC_TIMEOUT = 60.0


def conmon_argv(
    *,
    cid: str,
    runtime_path: str,
    runtime_args: list[str],
    bundle: Path,
    log_path: Path,
    exits_dir: Path,
    sock_dir: Path,
    terminal: bool,
    log_size_max: int | None = None,
) -> list[str]:
    argv = [
        CONMON, "--api-version", "1", "-c", cid, "-u", cid, "-n", cid,
        "-r", runtime_path, "-b", str(bundle),
        "-p", str(bundle / "pidfile"), "-P", str(bundle / "conmon.pid"),
        "-l", f"k8s-file:{log_path}", "--exit-dir", str(exits_dir),
        "--socket-dir-path", str(sock_dir), "--persist-dir", str(bundle / "persist"),
        "--syslog", "--log-level", "error",
    ]  # fmt: skip
    for arg in runtime_args:
        argv += ["--runtime-arg", arg]
    if terminal:
        argv.append("-t")
    if log_size_max:
        argv += ["--log-size-max", str(int(log_size_max))]
    return argv


def spawn(argv: list[str], bundle: Path, preexec: Callable[[], None] | None,
          env: dict[str, str] | None = None) -> int:
    """Start conmon, which forks, detaches and runs `<runtime> create`; return the container pid.
    ``env``: more environment for the runtime's prefix (the crun shim's warm-container fds)."""
    return Launch(argv, bundle, preexec, env=env).go()


class Launch:
    """conmon, started; with a ``gate``, its runtime waits on that FIFO until ``go()``.

    The gate lets the caller start conmon (its exec, and the runtime's prefix) first and
    write the bundle meanwhile. The gate's writer is held here: a cancel, or this process
    dying, closes it and the runtime gives up (exit 1), so a gated start never runs late.
    conmon reports the create result as JSON on the pipe named by _OCI_SYNCPIPE,
    including the runtime's error text, so nothing here waits on the container's stdio.
    """

    def __init__(self, argv: list[str], bundle: Path, preexec: Callable[[], None] | None,
                 gate: Path | None = None, env: dict[str, str] | None = None) -> None:
        self._bundle = bundle
        self._gate = gate
        self._gate_fd = -1
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **(env or {})}
        if gate is not None:
            os.mkfifo(gate, 0o600)
            # Read-write: opening never blocks, and the FIFO keeps its data until the runtime reads it.
            self._gate_fd = os.open(gate, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            env["CORRAL_GATE"] = str(gate)
        self._sync_r, w = os.pipe()
        try:
            with open(bundle / "conmon.err", "wb") as err:
                env["_OCI_SYNCPIPE"] = str(w)
                try:
                    self._proc = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        pass_fds=(w,),
                        env=env,
                        preexec_fn=preexec,
                        start_new_session=True,  # our signals (e.g. ^C to the agent) must not reach it
                        cwd=bundle,
                    )
                except OSError as e:
                    raise RuntimeFailure(f"cannot start conmon ({argv[0]}): {e}") from e
        except BaseException:
            self._close()
            raise
        finally:
            os.close(w)

    def go(self) -> int:
        """Let the runtime run; wait for the create and return the container pid."""
        try:
            if self._gate_fd >= 0:
                os.write(self._gate_fd, b"go\n")
            self._proc.wait()  # the launching parent exits right after forking the monitor
            msg = _read_sync(self._sync_r)
        finally:
            self._close()  # the gate's writer stays open until the runtime has read it
        if msg is None:
            detail = _tail(self._bundle / "conmon.err")
            raise RuntimeFailure(
                f"conmon exited without reporting the container's creation (exit {self._proc.returncode})"
                + (f": {detail}" if detail else "")
            )
        pid = int(msg.get("data", -1))
        if pid <= 0:
            text = str(msg.get("message") or _tail(self._bundle / "conmon.err") or "unknown error")
            raise RuntimeFailure(f"container create failed: {text.strip()}")
        return pid

    def cancel(self) -> None:
        """The runtime never runs: close the gate and wait until conmon has given up. Idempotent."""
        if self._sync_r < 0:
            return
        if self._gate_fd >= 0:
            os.close(self._gate_fd)
            self._gate_fd = -1
        try:
            self._proc.wait()
            _read_sync(self._sync_r)  # conmon answers the failed create, then exits
        except RuntimeFailure:
            pass
        finally:
            self._close()

    def _close(self) -> None:
        for fd in (self._gate_fd, self._sync_r):
            if fd >= 0:
                os.close(fd)
        self._gate_fd = self._sync_r = -1
        if self._gate is not None:
            self._gate.unlink(missing_ok=True)


def _read_sync(fd: int) -> dict[str, object] | None:
    buf = b""
    deadline = time.monotonic() + SYNC_TIMEOUT
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeFailure(f"conmon did not report the container's creation within {SYNC_TIMEOUT:.0f}s")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
    line = buf.split(b"\n", 1)[0].strip()
    if not line:
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return {"data": -1, "message": line.decode(errors="replace")}
    return data if isinstance(data, dict) else None


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_bytes()[-limit:].decode(errors="replace").strip()
    except OSError:
        return ""
