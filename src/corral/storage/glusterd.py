"""Corral's own GlusterFS server: one glusterd with its own state directory, address and brick ports.

The machine's package default (/var/lib/glusterd, /var/run/glusterd.socket, every address) is left
alone, so a storage server of Corral's can run beside anything else, and several on one machine
(each on its own address). Layout under ``state_dir``:

    glusterd.vol      the daemon's volfile (working directory, address, CLI socket, brick ports)
    glusterd/         glusterd's working directory: peers, volumes
    run/              pid files, the CLI socket (cli.socket), brick pid files
    log/              glusterd.log, cli.log

Bricks (glusterfsd) and the self-heal daemon are glusterd's children; their logs go where the
package puts them (/var/log/glusterfs/bricks, glustershd.log).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel

from corral.errors import InvalidRequest, StorageError

GLUSTERD = "/usr/sbin/glusterd"
GLUSTER = "/usr/sbin/gluster"
PORT = 24007  # glusterd's management port: clients and peers assume it
PACKAGE_LOGS = "/var/log/glusterfs"
_VOLUME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Shares fail over with their groups: clients notice a dead brick server in seconds, not the default
# 42 s, and refuse writes that only a minority of the replicas would take (no split brain).
VOLUME_OPTIONS = {"network.ping-timeout": "5", "cluster.quorum-type": "auto"}


class Volume(BaseModel):
    name: str
    status: str  # Created, Started, Stopped
    type: str  # Replicate, Distribute, ...
    bricks: list[str]


class GlusterServer:
    def __init__(self, state_dir: Path, address: str, *, base_port: int = 49152, max_port: int = 49251) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.address = address
        self.base_port, self.max_port = base_port, max_port
        self.workdir = self.state_dir / "glusterd"
        self.run_dir = self.state_dir / "run"
        self.log_dir = self.state_dir / "log"
        self.socket = self.run_dir / "cli.socket"
        self.pid_file = self.run_dir / "glusterd.pid"

    # the daemon --------------------------------------------------------------
    def _volfile(self) -> Path:
        path = self.state_dir / "glusterd.vol"
        path.write_text(f"""volume management
    type mgmt/glusterd
    option working-directory {self.workdir}
    option run-directory {self.run_dir}
    option glusterd-sockfile {self.socket}
    option transport-type socket
    option transport.socket.bind-address {self.address}
    option transport.socket.listen-port {PORT}
    option transport.socket.keepalive-time 10
    option transport.socket.keepalive-interval 2
    option transport.socket.read-fail-log off
    option ping-timeout 0
    option event-threads 1
    option base-port {self.base_port}
    option max-port {self.max_port}
end-volume
""")
        return path

    def pid(self) -> int | None:
        """glusterd's pid while it runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"glusterd" in cmdline and str(self.state_dir).encode() in cmdline else None

    def start(self, timeout: float = 30.0) -> None:
        """Start glusterd in the background unless it runs; returns once it answers its CLI."""
        if self.pid() is None:
            for d in (self.workdir, self.run_dir, self.log_dir):
                d.mkdir(parents=True, exist_ok=True)
            subprocess.Popen(
                [GLUSTERD, "-N", "-f", str(self._volfile()), "-p", str(self.pid_file),
                 "-l", str(self.log_dir / "glusterd.log")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.cli("volume", "list", timeout=5)
                return
            except StorageError as exc:
                if time.monotonic() > deadline:
                    raise StorageError(f"glusterd on {self.address} did not start: {exc}; see "
                                       f"{self.log_dir / 'glusterd.log'}") from exc
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop glusterd and the bricks and self-heal daemon it started (volumes stay defined)."""
        children = self._child_pids()
        sockets = [s for p in children for s in _socket_args(p)]
        pid = self.pid()
        for p in ([pid] if pid else []) + children:
            _terminate(p)
        for sock in sockets:  # the bricks' own sockets, which they leave behind
            Path(sock).unlink(missing_ok=True)
        self.pid_file.unlink(missing_ok=True)

    def _child_pids(self) -> list[int]:
        out = []
        for f in self.run_dir.rglob("*.pid"):
            if f == self.pid_file:
                continue
            try:
                out.append(int(f.read_text().strip()))
            except (OSError, ValueError):
                pass
        return out

    # the CLI -------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 60.0) -> str:
        cmd = [GLUSTER, f"--glusterd-sock={self.socket}", "--mode=script",
               f"--log-file={self.log_dir / 'cli.log'}", *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise StorageError(f"gluster {' '.join(args)}: no answer in {timeout:.0f} s") from exc
        if r.returncode != 0:
            raise StorageError(f"gluster {' '.join(args)}: {(r.stderr or r.stdout).strip() or 'failed'}")
        return r.stdout

    def probe(self, peer: str) -> None:
        """Add another storage server (its address) to this one's trusted pool."""
        self.cli("peer", "probe", peer)

    def volumes(self) -> list[Volume]:
        out, cur = [], None
        for line in self.cli("volume", "info").splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "Volume Name":
                cur = Volume(name=value, status="", type="", bricks=[])
                out.append(cur)
            elif cur is not None and key == "Status":
                cur.status = value
            elif cur is not None and key == "Type":
                cur.type = value
            elif cur is not None and re.fullmatch(r"Brick\d+", key):
                cur.bricks.append(value)
        return out

    def create_volume(self, name: str, bricks: list[str], replica: int | None = None) -> Volume:
        """Create and start a volume (idempotent: an existing one is started if it is not).

        ``bricks`` are ``ADDRESS:/dir``; the directories of this server's own bricks are created.
        With ``replica`` N every file is kept on N bricks (N must divide the number of bricks).
        """
        if not _VOLUME.match(name):
            raise InvalidRequest(f"volume name {name!r}: use 1-64 letters, digits, '-' and '_'", target="volume")
        if not bricks:
            raise InvalidRequest("a volume needs at least one brick (ADDRESS:/directory)", target="bricks")
        if replica is not None and (replica < 2 or len(bricks) % replica):
            raise InvalidRequest(f"replica {replica} needs a multiple of {replica} bricks (got {len(bricks)})",
                                 target="replica")
        for brick in bricks:
            host, sep, path = brick.partition(":")
            if not sep or not path.startswith("/"):
                raise InvalidRequest(f"brick {brick!r} must be ADDRESS:/absolute/directory", target="bricks")
            if host == self.address:
                Path(path).mkdir(parents=True, exist_ok=True)
        existing = {v.name: v for v in self.volumes()}
        if name not in existing:
            # "force": bricks may sit on the root file system (Gluster warns about it; we choose it).
            self.cli("volume", "create", name, *(["replica", str(replica)] if replica else []), *bricks, "force")
            for option, value in VOLUME_OPTIONS.items():
                self.cli("volume", "set", name, option, value)
        if name not in existing or existing[name].status != "Started":
            self.cli("volume", "start", name, "force")
        return next(v for v in self.volumes() if v.name == name)

    def delete_volume(self, name: str) -> None:
        """Stop and delete a volume (its bricks' files stay on disk). A missing volume is fine."""
        volume = next((v for v in self.volumes() if v.name == name), None)
        if volume is None:
            return
        sockets = [s for p in self._child_pids() for s in _socket_args(p) if _brick_of(p, volume)]
        self.cli("volume", "stop", name, "force")
        self.cli("volume", "delete", name)
        for sock in sockets:
            Path(sock).unlink(missing_ok=True)
        for brick in volume.bricks:  # glusterd logs each brick under the package's log directory
            host, _, path = brick.partition(":")
            if host == self.address:
                Path(PACKAGE_LOGS, "bricks", path.strip("/").replace("/", "-") + ".log").unlink(missing_ok=True)
        for empty in ("gfproxy", "snaps"):  # and makes two log directories per volume
            try:
                Path(PACKAGE_LOGS, empty, name).rmdir()
            except OSError:
                pass


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _socket_args(pid: int) -> list[str]:
    args = _cmdline(pid)
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-S" and args[i + 1].startswith("/var/run/gluster/")]


def _brick_of(pid: int, volume: Volume) -> bool:
    args = _cmdline(pid)
    return "--volfile-id" in args and args[args.index("--volfile-id") + 1].startswith(volume.name + ".")


def _terminate(pid: int, wait: float = 5.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:  # our own child (started in this process): reap it
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
