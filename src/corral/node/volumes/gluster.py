"""azureFile shares on a GlusterFS volume, mounted through FUSE at the node's shares root.

Every node of a cluster mounts the same volume (``gluster://server[,server...]/volume``) where a
lone node keeps its share directories, so ShareStore's layout is unchanged and a group that moves
to another node finds its share's files there. The mount is made when first needed and made again
when its FUSE client died ("Transport endpoint is not connected").
"""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel

from corral.errors import InvalidRequest, VolumeError
from corral.node.images import overlay
from corral.node.volumes.shares import Share, ShareStore

GLUSTERFS = "/usr/sbin/glusterfs"
_SOURCE = re.compile(r"^gluster://([^/]+)/([A-Za-z0-9_-]{1,64})/?$")


class GlusterSource(BaseModel):
    servers: list[str]  # volfile servers, tried in order: any storage server of the pool
    volume: str

    @classmethod
    def parse(cls, url: str) -> GlusterSource:
        m = _SOURCE.match(url.strip())
        servers = [s for s in (m.group(1).split(",") if m else []) if s]
        if not m or not servers:
            raise InvalidRequest(f"shares source {url!r}: use gluster://SERVER[,SERVER...]/VOLUME", target="shares")
        return cls(servers=servers, volume=m.group(2))

    def url(self) -> str:
        return f"gluster://{','.join(self.servers)}/{self.volume}"


def _fstype(path: Path) -> str | None:
    """The file system type mounted at ``path`` (the topmost mount), or None."""
    target, found = os.path.realpath(path), None
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields, _, rest = line.partition(" - ")
            if overlay._unescape(fields.split(" ")[4]) == target:
                found = rest.split(" ", 1)[0]
    return found


class GlusterMount:
    def __init__(self, source: GlusterSource, mountpoint: Path, state_dir: Path) -> None:
        self.source, self.mountpoint = source, Path(mountpoint).absolute()
        self.state_dir = Path(state_dir)
        self.pid_file = self.state_dir / "gluster-mount.pid"
        self.log_file = self.state_dir / "gluster-mount.log"

    def mounted(self) -> bool:
        """Whether the volume is mounted here and its FUSE client answers."""
        if _fstype(self.mountpoint) != "fuse.glusterfs":
            return False
        try:
            os.statvfs(self.mountpoint)
        except OSError as exc:
            if exc.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO):
                return False
            raise
        return True

    def ensure(self, timeout: float = 30.0) -> None:
        """Mount the volume unless it is mounted and alive (a dead client's mount is replaced)."""
        if self.mounted():
            return
        if _fstype(self.mountpoint) is not None:
            self.unmount()
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [GLUSTERFS, *(f"--volfile-server={s}" for s in self.source.servers),
               f"--volfile-id={self.source.volume}", f"--log-file={self.log_file}", f"--pid-file={self.pid_file}",
               "--process-name=fuse", str(self.mountpoint)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while r.returncode == 0 and not self.mounted() and time.monotonic() < deadline:
            time.sleep(0.1)
        if r.returncode != 0 or not self.mounted():
            self.unmount()
            raise VolumeError(f"could not mount {self.source.url()} at {self.mountpoint}: "
                              f"{(r.stderr or r.stdout).strip() or self._log_tail()}", target="azureFile")

    def _log_tail(self) -> str:
        try:
            errors = [line for line in self.log_file.read_text(errors="replace").splitlines() if "] E [" in line]
        except OSError:
            return "see the mount's log"
        return errors[-1] if errors else f"see {self.log_file}"

    def unmount(self) -> None:
        """Unmount (lazily if busy) and end the FUSE client. Not mounted is fine."""
        if _fstype(self.mountpoint) is not None:
            overlay.unmount(self.mountpoint)
        # The client does not always exit when its mount goes (not while its servers are away).
        pid = self.client_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while self.client_pid() == pid and time.monotonic() < deadline:
                time.sleep(0.05)
            if self.client_pid() == pid:
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def client_pid(self) -> int | None:
        """The FUSE client's pid while it runs."""
        try:
            pid = int(self.pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, ValueError, IndexError):
            return None
        return pid if state != "Z" and str(self.mountpoint).encode() in cmdline else None


class GlusterShares:
    """The ShareBackend of a cluster node: ShareStore on the mounted volume, mounted on first use."""

    def __init__(self, mount: GlusterMount) -> None:
        self.mount = mount
        self._store: ShareStore | None = None

    def _shares(self) -> ShareStore:
        self.mount.ensure()
        if self._store is None:
            self._store = ShareStore(self.mount.mountpoint)
        return self._store

    def create(self, name: str, quota_gb: int | None = None) -> Share:
        return self._shares().create(name, quota_gb)

    def list(self) -> list[Share]:
        return self._shares().list()

    def get(self, name: str) -> Share | None:
        return self._shares().get(name)

    def delete(self, name: str) -> None:
        self._shares().delete(name)

    def path(self, name: str) -> Path:
        return self._shares().path(name)

    def usage(self, name: str) -> int:
        return self._shares().usage(name)
