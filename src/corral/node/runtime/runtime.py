"""Container lifecycle on one node: OCI runtime (crun/runc/runsc) supervised by conmon.

On-disk layout under ``state_dir`` (everything a restarted agent needs to adopt containers):

    containers/<id>/   bundle: config.json, meta.json, pidfile, conmon.pid, persist/{exit,oom}
                       (or a link to the warm bundle the container was bound to, see warm.py)
    warm/<wid>/        bundles of warm containers: started ahead, waiting for a container's command
    exits/<id>         conmon's exit-code file (its appearance is the exit event); <wid> for a warm one
    sock/              conmon attach-socket links
    oci/               the OCI runtime's --root (kept per state_dir so agents don't collide)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal as _signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from corral.errors import InvalidRequest, NotFound, RuntimeFailure
from corral.fileio import atomic_write
from corral.node.runtime import _sys, cgroups, conmon, sealed, warm
from corral.node.runtime.inotify import IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO, Inotify

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
RUNTIMES = ("crun", "runc", "runsc")
# Runtimes conmon starts as `run --detach`: created and started in one process (see Runtime._conmon_runtime).
# runc and runsc create, then `start` (runsc's sandbox gets its limits in between).
STARTED_ON_CREATE = ("crun",)
# Runtimes run from a sealed in-memory copy, so they skip copying themselves per call (see sealed).
SEALED = ("crun",)
CMD_TIMEOUT = 60.0
# How long after its start a container's init may take to install a SIGTERM handler (see stop).
HANDLER_GRACE = 1.0


class ContainerState(BaseModel):
    id: str
    status: Literal["created", "running", "stopped", "absent"]
    pid: int | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None


class _Meta(BaseModel):
    """What we remember about a container beyond what conmon writes."""

    runtime: str
    log_path: str
    cgroup_path: str | None = None
    netns: str | None = None  # runsc only: the runtime itself runs inside this netns
    created_at: datetime
    started_at: datetime | None = None
    pid: int | None = None
    pid_start: int | None = None
    oci_id: str | None = None  # the runtime's and conmon's id, when not the container's (a warm container's)



def check_id(cid: str) -> None:
    if not _ID_RE.match(cid):
        raise InvalidRequest(f"container id {cid!r} is invalid: use 1-128 letters, digits, '_', '.', '-' (not first)")


class ExitWatcher:
    """Learn about container exits without polling: inotify on conmon's exit directory.

    ``wait(timeout)`` returns ids whose exit file appeared since the last call (may
    be empty on timeout). Pair it with a periodic ``Runtime.state`` sweep: the
    watcher is an optimisation, the on-disk state is the truth.
    """

    def __init__(self, exits_dir: Path, owner: Callable[[str], str | None] = lambda name: name) -> None:
        self._owner = owner  # the container an exit file's name belongs to (None: no container's)
        self._ino = Inotify()
        # conmon writes "<id>.XXXXXX" and renames it to "<id>": only the rename names an exit.
        self._ino.add_watch(exits_dir, IN_MOVED_TO)

    def wait(self, timeout: float | None) -> list[str]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            seen: list[str] = []
            for _path, name, _mask in self._ino.wait(left):
                cid = self._owner(name) if name and not name.startswith(".") else None
                if cid and cid not in seen:
                    seen.append(cid)
            if seen or (deadline is not None and time.monotonic() >= deadline):
                return seen

    def close(self) -> None:
        self._ino.close()

    def __enter__(self) -> ExitWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Launched(conmon.Launch):
    """A container's conmon, started by ``Runtime.launch``: its runtime waits at the bundle's gate for ``run``."""

    def __init__(self, cid: str, log_path: Path, terminal: bool, argv: list[str], bundle: Path) -> None:
        super().__init__(argv, bundle, None, gate=bundle / "gate")
        self.cid = cid
        self.log_path = log_path
        self.terminal = terminal


@dataclass
class WarmContainer:
    """A warm container this runtime started (``Runtime.start_warm``), until bound or discarded."""

    wid: str
    pid: int
    pid_start: int | None
    fifos: warm.WarmFifos
    log_path: Path
    cgroup_path: str


class Runtime:
    def __init__(self, state_dir: Path, runtime: str = "crun") -> None:
        if runtime not in RUNTIMES:
            raise InvalidRequest(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
        path = shutil.which(runtime)
        if path is None:
            raise RuntimeFailure(f"OCI runtime {runtime!r} is not installed on this node")
        self.name = runtime
        self.runtime_path = path
        self.state_dir = Path(state_dir).absolute()
        self.containers_dir = self.state_dir / "containers"
        self.exits_dir = self.state_dir / "exits"
        self.sock_dir = self.state_dir / "sock"
        self.oci_root = self.state_dir / "oci"
        self.warm_dir = self.state_dir / "warm"
        for d in (self.containers_dir, self.exits_dir, self.sock_dir, self.oci_root, self.warm_dir):
            d.mkdir(parents=True, exist_ok=True)

    # ---- paths and small helpers -------------------------------------------------

    def bundle(self, cid: str) -> Path:
        check_id(cid)
        return self.containers_dir / cid

    def oci_id(self, cid: str, meta: _Meta | None = None) -> str:
        """The id the OCI runtime and conmon know ``cid`` by: its own, or its warm container's."""
        meta = meta or self._meta(cid)
        return meta.oci_id if meta and meta.oci_id else cid

    def owner_of(self, oci_id: str) -> str | None:
        """The container an OCI id (an exit file's name) belongs to; None for a warm container not bound."""
        if not oci_id.startswith(warm.PREFIX):
            return oci_id
        try:
            return (self.warm_dir / oci_id / "owner").read_text() or None
        except OSError:
            return None

    def _exe(self, runtime: str) -> str:
        """The path to exec ``runtime`` from: its sealed copy where it takes one, else its binary."""
        path = self.runtime_path if runtime == self.name else (shutil.which(runtime) or runtime)
        return sealed.exe_path(path) if runtime in SEALED else path

    def _global_args(self, runtime: str) -> list[str]:
        args = ["--root", str(self.oci_root / runtime)]
        if runtime == "runsc":
            # Hybrid cgroups defeat runsc's cgroup code; its netstack can't start in a netns here.
            args += ["--ignore-cgroups", "--network=host"]
        return args

    def _preexec(self, runtime: str, netns: str | None, creating: bool) -> Callable[[], None] | None:
        if runtime == "runsc" and netns:
            if not creating and not os.path.exists(netns):
                return None  # the group's netns is already gone: kill/delete still work outside it
            return lambda: _sys.enter_netns(netns)
        return None  # crun's create: see _conmon_runtime

    def _conmon_runtime(self, runtime: str) -> tuple[str, list[str]]:
        """The command conmon runs as its runtime (path, leading arguments), before its ``create ...``.

        crun's goes through a mount namespace without the cgroup2 mount (crun refuses hybrid
        hosts otherwise) and turns ``create`` into ``run --detach`` (``STARTED_ON_CREATE``).
        """
        if runtime == "crun":
            prefix = _sys.runtime_prefix(create_runs=True)
            return prefix[0], [*prefix[1:], self._exe(runtime), *self._global_args(runtime)]
        return self._exe(runtime), self._global_args(runtime)

    def _oci(
        self,
        cid: str,
        *args: str,
        meta: _Meta | None = None,
        check: bool = True,
        timeout: float = CMD_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run one OCI runtime verb for ``cid`` (the runtime the container was created with)."""
        runtime = meta.runtime if meta else self.name
        argv = [self._exe(runtime), *self._global_args(runtime), *args]
        try:
            res = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                preexec_fn=self._preexec(runtime, meta.netns if meta else None, creating=False),
            )  # fmt: skip
        except subprocess.TimeoutExpired as e:
            raise RuntimeFailure(f"{runtime} {args[0]} {cid} timed out after {timeout:.0f}s") from e
        except (OSError, subprocess.SubprocessError) as e:
            raise RuntimeFailure(f"cannot run {runtime} {args[0]} {cid}: {e}") from e
        if check and res.returncode != 0:
            raise RuntimeFailure(f"{runtime} {args[0]} {cid} failed: {res.stderr.strip() or res.stdout.strip()}")
        return res

    def oci_command(self, cid: str, *args: str) -> tuple[list[str], Callable[[], None] | None]:
        """argv and preexec_fn for a runtime verb on ``cid`` (used by exec/attach helpers): ``args``,
        then the runtime's id of the container."""
        meta = self._meta(cid)
        if meta is None:
            raise NotFound(f"container {cid} does not exist on this node")
        argv = [self._exe(meta.runtime), *self._global_args(meta.runtime), *args, self.oci_id(cid, meta)]
        return argv, self._preexec(meta.runtime, meta.netns, creating=False)

    def _meta(self, cid: str) -> _Meta | None:
        return self._meta_at(self.bundle(cid))

    def _save_meta(self, cid: str, meta: _Meta) -> None:
        self._save_meta_at(self.bundle(cid), meta)

    @staticmethod
    def _save_meta_at(bundle: Path, meta: _Meta) -> None:
        atomic_write(bundle / "meta.json", meta.model_dump_json(), durable=False)

    @staticmethod
    def _read_int(path: Path) -> int | None:
        try:
            text = path.read_text().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def _conmon_pid(self, cid: str) -> int | None:
        return self._read_int(self.bundle(cid) / "conmon.pid")

    # ---- lifecycle ---------------------------------------------------------------

    def launch(self, cid: str, log_path: Path, *, terminal: bool = False,
               log_size_max: int | None = None) -> Launched | None:
        """Start ``cid``'s conmon now, its runtime held at a gate until ``run(..., launched=)``.

        conmon's exec and the runtime's prefix (~5 ms) then overlap with the caller's
        rootfs and spec. For a container that does not exist yet; None when this runtime
        cannot wait at a gate (runc, runsc, or crun without the native shim): ``run`` then
        starts conmon itself. The caller must ``run`` or ``cancel`` what it gets.
        """
        check_id(cid)
        if not _sys.gated([self._conmon_runtime(self.name)[0]]):
            return None
        bundle = self.bundle(cid)
        log_path = Path(log_path).absolute()
        self._make_bundle(cid, bundle, log_path)
        argv = self._conmon_argv(cid, bundle, log_path, terminal, log_size_max)
        try:
            return Launched(cid, log_path, terminal, argv, bundle)
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise

    def run(self, cid: str, spec: dict[str, Any], log_path: Path, *, log_size_max: int | None = None,
            launched: Launched | None = None) -> ContainerState:
        """Create and start ``cid``; returns once it runs. Re-running converges.

        ``log_size_max`` (bytes) makes conmon truncate the log when it grows past it.
        ``launched``: its conmon, from ``launch`` (which took the log options).

        Already running: returned as is. Created but not started (a crash in
        between): started. Stopped or half-made: cleaned up and created afresh.
        """
        check_id(cid)
        if launched is None:
            cur = self.state(cid)
            if cur.status == "running":
                return cur
            if cur.status == "created" and self._meta(cid) is not None:
                return self._start(cid)
            if cur.status != "absent":
                self.delete(cid)
        elif launched.cid != cid or Path(log_path).absolute() != launched.log_path:
            raise ValueError(f"launched for {launched.cid}, not {cid} with this log")
        bundle = self.bundle(cid)
        try:
            return self._create_and_start(cid, spec, Path(log_path).absolute(), bundle, log_size_max, launched)
        except BaseException:
            # Leave nothing half-made behind; the error says what went wrong.
            try:
                if launched is not None:
                    launched.cancel()
                self.delete(cid)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise

    # ---- warm containers (warm.py) -------------------------------------------------

    def warm_capable(self) -> bool:
        """Whether this runtime can start warm containers: crun behind the native shim, and the warm init."""
        return (self.name == "crun" and warm.init_path() is not None
                and _sys.gated([self._conmon_runtime(self.name)[0]]))

    def start_warm(self, wid: str, spec: dict[str, Any]) -> WarmContainer:
        """Start a warm container from ``spec`` (its process is the warm init's, see warm.ARGS)."""
        if not wid.startswith(warm.PREFIX) or not _ID_RE.match(wid):
            raise ValueError(f"warm container ids look like {warm.PREFIX}<hex>, not {wid!r}")
        bundle = self.warm_dir / wid
        log_path = bundle / "container.log"
        self._make_bundle(wid, bundle, log_path)
        fifos: warm.WarmFifos | None = None
        try:
            fifos = warm.WarmFifos(bundle)
            atomic_write(bundle / "config.json", json.dumps(spec), durable=False)
            cgroup_path = str((spec.get("linux") or {}).get("cgroupsPath") or "")
            meta = _Meta(runtime=self.name, log_path=str(log_path), cgroup_path=cgroup_path or None,
                         created_at=datetime.now(UTC), oci_id=wid)
            self._save_meta_at(bundle, meta)
            argv = self._conmon_argv(wid, bundle, log_path, False, None)
            pid = conmon.spawn(argv, bundle, None, env=fifos.env())
            meta.pid, meta.pid_start = pid, _sys.proc_start_time(pid)
            self._save_meta_at(bundle, meta)
            return WarmContainer(wid, pid, meta.pid_start, fifos, log_path, cgroup_path)
        except BaseException:
            if fifos is not None:
                fifos.close()
            self.discard_warm(wid)
            raise

    def bind_warm(self, w: WarmContainer, cid: str, cwd: str, args: list[str], env: list[str],
                  resources: dict[str, Any]) -> ContainerState:
        """Make warm container ``w`` container ``cid``: its limits, then its command. Raises RuntimeFailure
        (and leaves ``cid`` for the caller to delete) when the command cannot start."""
        check_id(cid)
        bundle = self.warm_dir / w.wid
        link = self.bundle(cid)
        command = warm.encode(cwd, args, env)
        # The owner first, then the link: from the link on, the warm container is cid's (recover_warm).
        (bundle / "owner").write_text(cid)
        os.symlink(os.path.relpath(bundle, link.parent), link)
        try:
            cgroups.write_limits(w.cgroup_path, resources)
        except OSError as e:
            w.fifos.close()
            raise RuntimeFailure(f"cannot apply the resource limits of {cid}: {e}") from e
        spec = self._config_at(bundle) or {}
        spec.setdefault("process", {}).update(args=args, env=env, cwd=cwd)
        spec.setdefault("linux", {})["resources"] = {**spec["linux"].get("resources", {}), **resources}
        atomic_write(bundle / "config.json", json.dumps(spec), durable=False)  # what exec and inspection read
        w.fifos.deliver(command)
        meta = self._meta(cid)
        if meta is None:
            raise RuntimeFailure(f"warm container {w.wid} lost its metadata")
        meta.started_at = datetime.now(UTC)
        self._save_meta(cid, meta)
        return ContainerState(id=cid, status="running", pid=w.pid, started_at=meta.started_at)

    def warm_waiting(self, w: WarmContainer) -> bool:
        """Whether ``w``'s init is alive and still waits for a command."""
        return self._runs_warm_init(w.pid, w.pid_start) is True

    @staticmethod
    def _runs_warm_init(pid: int, pid_start: int | None) -> bool | None:
        """Whether process ``pid`` is still the warm init (not yet its container's command); None: gone."""
        if not _sys.pid_alive(pid, pid_start):
            return None
        init = warm.init_path()
        try:
            exe = Path(os.readlink(f"/proc/{pid}/exe"))
        except OSError:
            return None
        return init is not None and exe == init.resolve()

    def discard_warm(self, wid: str) -> None:
        """Remove a warm container that is no container's (idempotent); nothing of a user's ran in it."""
        bundle = self.warm_dir / wid
        if bundle.is_dir():
            self._delete_at(wid, bundle, wid, self._meta_at(bundle))

    def warm_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in self.warm_dir.iterdir() if p.name.startswith(warm.PREFIX))
        except FileNotFoundError:
            return []

    def recover_warm(self) -> None:
        """After a restart: warm containers no container owns are discarded (their command FIFO's writer
        died with the agent); one bound whose init never exec'd its command is deleted, so its container
        starts afresh; one that did is recorded as started. Nothing runs twice."""
        for wid in self.warm_ids():
            bundle = self.warm_dir / wid
            owner = self.owner_of(wid)
            link = self.containers_dir / owner if owner else None
            if link is None or not link.is_symlink() or link.resolve() != bundle.resolve():
                self.discard_warm(wid)
                continue
            assert owner is not None
            meta = self._meta_at(bundle)
            if meta is None or meta.started_at is not None:
                continue
            if meta.pid and self._runs_warm_init(meta.pid, meta.pid_start) is False:
                meta.started_at = datetime.now(UTC)  # it exec'd its command before the agent died
                self._save_meta(owner, meta)
                continue
            self.delete(owner)

    def _meta_at(self, bundle: Path) -> _Meta | None:
        try:
            return _Meta.model_validate_json((bundle / "meta.json").read_text())
        except (OSError, ValueError):
            return None

    def _conmon_argv(self, cid: str, bundle: Path, log_path: Path, terminal: bool,
                     log_size_max: int | None) -> list[str]:
        runtime_path, runtime_args = self._conmon_runtime(self.name)
        return conmon.conmon_argv(
            cid=cid, runtime_path=runtime_path, runtime_args=runtime_args,
            bundle=bundle, log_path=log_path, exits_dir=self.exits_dir, sock_dir=self.sock_dir,
            terminal=terminal, log_size_max=log_size_max,
        )  # fmt: skip

    def _make_bundle(self, cid: str, bundle: Path, log_path: Path) -> None:
        bundle.mkdir(parents=True)
        (bundle / "persist").mkdir()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        (self.exits_dir / cid).unlink(missing_ok=True)

    def _create_and_start(
        self, cid: str, spec: dict[str, Any], log_path: Path, bundle: Path, log_size_max: int | None,
        launched: Launched | None = None,
    ) -> ContainerState:
        netns: str | None = None
        if self.name == "runsc":
            spec = json.loads(json.dumps(spec))  # private copy: adapted below
            netns = self._runsc_adapt(spec)
        if launched is None:
            self._make_bundle(cid, bundle, log_path)
        atomic_write(bundle / "config.json", json.dumps(spec), durable=False)
        meta = _Meta(
            runtime=self.name, log_path=str(log_path), netns=netns, created_at=datetime.now(UTC),
            cgroup_path=(spec.get("linux") or {}).get("cgroupsPath"),
        )  # fmt: skip
        self._save_meta(cid, meta)
        if launched is not None:
            if bool((spec.get("process") or {}).get("terminal")) != launched.terminal:
                raise ValueError(f"{cid} was launched with terminal={launched.terminal}, its spec says otherwise")
            pid = launched.go()
        else:
            terminal = bool((spec.get("process") or {}).get("terminal"))
            argv = self._conmon_argv(cid, bundle, log_path, terminal, log_size_max)
            pid = conmon.spawn(argv, bundle, self._preexec(self.name, netns, creating=True))
        meta.pid = pid
        meta.pid_start = _sys.proc_start_time(pid)
        if self.name not in STARTED_ON_CREATE:
            self._save_meta(cid, meta)
            return self._start(cid)
        # conmon's runtime already started it. A crash before this write
        # leaves a live pid without a start time: state() asks the runtime and records it.
        meta.started_at = datetime.now(UTC)
        self._save_meta(cid, meta)
        return ContainerState(id=cid, status="running", pid=pid, started_at=meta.started_at)

    def _limit_sandbox(self, cid: str, cgroup_path: str, resources: dict[str, Any], sandbox_pid: int) -> None:
        """runsc runs with --ignore-cgroups here: put its sandbox (and gofer) under the limits ourselves."""
        cpid = self._conmon_pid(cid)
        helpers = [p for p in _sys.children_of(cpid) if p != sandbox_pid] if cpid else []
        # gVisor's ptrace platform runs application code in stub processes forked from a stub
        # made at boot: move the sandbox's whole tree so later stubs are born inside the limits.
        sandbox = [sandbox_pid, *_sys.descendants_of(sandbox_pid)]
        # Host tasks of a sandbox are gVisor's threads, not the app's processes: no pids limit.
        resources = {k: v for k, v in resources.items() if k != "pids"}
        try:
            cgroups.place_processes(cgroup_path, resources, [*sandbox, *helpers], sandbox)
        except OSError as e:
            raise RuntimeFailure(f"cannot apply resource limits to sandbox of {cid}: {e}") from e

    def _runsc_adapt(self, spec: dict[str, Any]) -> str | None:
        """gVisor runs with --network=host inside the group's netns: drop the netns from the spec."""
        linux = spec.setdefault("linux", {})
        netns: str | None = None
        kept = []
        for ns in linux.get("namespaces", []):
            if ns.get("type") == "network":
                netns = ns.get("path")
                continue
            kept.append(ns)
        linux["namespaces"] = kept
        return netns

    def _start(self, cid: str) -> ContainerState:
        meta = self._meta(cid)
        if meta is None:
            raise RuntimeFailure(f"container {cid} has no metadata; delete and run it again")
        if meta.runtime == "runsc" and meta.cgroup_path and meta.pid:
            # Here rather than after create, so a run() resumed after a crash applies them too.
            resources = ((self._config(cid) or {}).get("linux") or {}).get("resources") or {}
            self._limit_sandbox(cid, meta.cgroup_path, resources, meta.pid)
        res = self._oci(cid, "start", self.oci_id(cid, meta), meta=meta, check=False)
        # A crash right after a successful start leaves it started but unrecorded: that is fine too.
        if res.returncode != 0 and self._oci_status(cid, meta) != "running":
            detail = res.stderr.strip() or res.stdout.strip()
            raise RuntimeFailure(f"{meta.runtime} start {cid} failed: {detail}")
        meta.started_at = datetime.now(UTC)
        self._save_meta(cid, meta)
        return self.state(cid)

    def _oci_status(self, cid: str, meta: _Meta | None) -> str | None:
        """The runtime's own view (``<runtime> state``); spawns a process, so only for rare cases."""
        res = self._oci(cid, "state", self.oci_id(cid, meta), meta=meta, check=False)
        if res.returncode != 0:
            return None
        try:
            status = json.loads(res.stdout).get("status")
        except ValueError:
            return None
        return str(status) if status else None

    def state(self, cid: str) -> ContainerState:
        """Current state from files and /proc only (no runtime process spawned)."""
        bundle = self.bundle(cid)
        if not bundle.is_dir():
            return ContainerState(id=cid, status="absent")
        meta = self._meta(cid)
        started = meta.started_at if meta else None
        exited = self._exited_state(cid, started, meta)
        if exited is not None:
            return exited
        pid = meta.pid if meta and meta.pid else self._read_int(bundle / "pidfile")
        pid_start = meta.pid_start if meta else None
        if pid and _sys.pid_alive(pid, pid_start):
            # A warm container's start is recorded when bound (recover_warm settles a crash in between).
            if (started is None and meta is not None and meta.oci_id is None
                    and self._oci_status(cid, meta) == "running"):
                # Started, but the agent died before recording it: record it now.
                meta.started_at = started = datetime.now(UTC)
                self._save_meta(cid, meta)
            status: Literal["created", "running"] = "running" if started else "created"
            return ContainerState(id=cid, status=status, pid=pid, started_at=started)
        cpid = self._conmon_pid(cid)
        if cpid and _sys.pid_alive(cpid):
            # The container just died; conmon writes the exit file within moments.
            if self.wait_exit(cid, 2.0):
                exited = self._exited_state(cid, started, meta)
                if exited is not None:
                    return exited
            if pid is None:
                return ContainerState(id=cid, status="created", started_at=started)
        # conmon is gone without an exit record (killed, or creation never finished).
        return ContainerState(id=cid, status="stopped", started_at=started)

    def _exited_state(self, cid: str, started: datetime | None, meta: _Meta | None) -> ContainerState | None:
        exit_file = self.exits_dir / self.oci_id(cid, meta)
        code = self._read_int(exit_file)
        if code is None:
            return None
        now = datetime.now(UTC)
        try:
            # Clamped to now: a file system's clock (host-backed, networked) may run ahead of ours, and an
            # exit must never look later than the moment it was seen, nor earlier than the start.
            finished = min(datetime.fromtimestamp(exit_file.stat().st_mtime, UTC), now)
        except OSError:
            finished = now
        if started is not None:
            finished = max(finished, started)
        oom = (self.bundle(cid) / "persist" / "oom").exists()
        if not oom and meta and meta.cgroup_path:
            oom = cgroups.read_oom_kill_count(meta.cgroup_path) > 0
        return ContainerState(
            id=cid, status="stopped", exit_code=code, oom_killed=oom, started_at=started, finished_at=finished
        )

    def wait_exit(self, cid: str, timeout: float | None = None) -> bool:
        """Block until ``cid`` has exited (True) or ``timeout`` passes (False). inotify, not polling."""
        exit_file = self.exits_dir / self.oci_id(cid)
        deadline = None if timeout is None else time.monotonic() + timeout
        with Inotify() as ino:
            ino.add_watch(self.exits_dir, IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
            while True:
                if exit_file.exists():
                    return True
                cpid = self._conmon_pid(cid)
                if not self.bundle(cid).is_dir() or (cpid is not None and not _sys.pid_alive(cpid)):
                    return exit_file.exists()
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                # Wake at least twice a second to notice a conmon that died without a word.
                ino.wait(0.5 if left is None else min(left, 0.5))

    def exit_watcher(self) -> ExitWatcher:
        return ExitWatcher(self.exits_dir, self.owner_of)

    def kill(self, cid: str, signal: int = _signal.SIGTERM) -> None:
        """Send ``signal`` to the container's init; a no-op if it is not running."""
        st = self.state(cid)
        if st.status == "absent":
            raise NotFound(f"container {cid} does not exist on this node")
        if st.status not in ("running", "created"):
            return
        meta = self._meta(cid)
        res = self._oci(cid, "kill", self.oci_id(cid, meta), str(int(signal)), meta=meta, check=False)
        if res.returncode != 0 and self.state(cid).status in ("running", "created"):
            raise RuntimeFailure(f"{self.name} kill {cid} failed: {res.stderr.strip()}")

    def stop(self, cid: str, timeout: float = 10) -> ContainerState:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL; returns the final state."""
        st = self.state(cid)
        if st.status not in ("running", "created"):
            return st
        if st.pid and not self._handles_sigterm(st):
            timeout = 0.05  # PID 1 without a SIGTERM handler ignores it: waiting would only delay the kill
        self.kill(cid, _signal.SIGTERM)
        if not self.wait_exit(cid, timeout):
            self.kill(cid, _signal.SIGKILL)
            self.wait_exit(cid, 30)
        return self.state(cid)

    @staticmethod
    def _handles_sigterm(st: ContainerState) -> bool:
        """Whether the init handles SIGTERM. One started moments ago may not have installed its
        handler yet (and PID 1 drops a signal it does not handle): it gets until HANDLER_GRACE
        seconds after its start to do so."""
        assert st.pid is not None
        age = (datetime.now(UTC) - st.started_at).total_seconds() if st.started_at else HANDLER_GRACE
        deadline = time.monotonic() + max(0.0, HANDLER_GRACE - age)
        while not _sys.catches_sigterm(st.pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def delete(self, cid: str) -> None:
        """Remove every trace of ``cid``: process, runtime state, conmon, cgroups, bundle. Idempotent."""
        bundle = self.bundle(cid)
        if not bundle.exists() and not bundle.is_symlink() and not any(
                (self.oci_root / r / cid).exists() for r in RUNTIMES):
            # Never created here (the bundle is written before the runtime is asked to create):
            # spare the runtime call, which costs a process on every container start.
            return
        meta = self._meta(cid)
        self._delete_at(cid, bundle, self.oci_id(cid, meta), meta)

    def _delete_at(self, cid: str, bundle: Path, oid: str, meta: _Meta | None) -> None:
        """``delete`` of the container whose bundle is ``bundle`` and whose runtime id is ``oid``."""
        cgroup_path = meta.cgroup_path if meta else self._cgroup_from_config(bundle)
        pid = meta.pid if meta and meta.pid else self._read_int(bundle / "pidfile")
        pid_start = meta.pid_start if meta else None
        problems: list[str] = []
        if pid and _sys.pid_alive(pid, pid_start):
            try:
                self._oci(cid, "kill", oid, "KILL", meta=meta, check=False)
            except RuntimeFailure as e:
                problems.append(e.message)
            if not _sys.wait_pid_exit(pid, 5.0) and _sys.pid_alive(pid, pid_start):
                # The runtime could not do it: SIGKILL to a pid namespace's init ends them all.
                try:
                    os.kill(pid, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _sys.wait_pid_exit(pid, 5.0)
        if pid and _sys.pid_alive(pid, pid_start):
            # Keep the bundle: without it a later delete could not find this process again.
            raise RuntimeFailure(f"container {cid} (pid {pid}) survived SIGKILL; delete again later")
        try:
            # Failure here is tolerated: the state is gone or will be cleaned by a re-run.
            self._oci(cid, "delete", "--force", oid, meta=meta, check=False)
        except RuntimeFailure as e:
            problems.append(e.message)
        cpid = self._read_int(bundle / "conmon.pid")
        if cpid and _sys.pid_alive(cpid) and self._is_conmon(cpid, oid):
            if not _sys.wait_pid_exit(cpid, 2.0):
                try:
                    os.kill(cpid, _signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _sys.wait_pid_exit(cpid, 2.0)
        if problems:
            log.warning("deleting container %s: %s", cid, "; ".join(problems))
        if cgroup_path:
            try:
                cgroups.remove_cgroup(cgroup_path)
            except OSError as e:
                raise RuntimeFailure(f"cannot remove cgroup {cgroup_path} of {cid}: {e}; delete again later") from e
        (self.exits_dir / oid).unlink(missing_ok=True)
        sock = self.sock_dir / oid
        if sock.is_symlink() or sock.is_file():
            sock.unlink(missing_ok=True)
        elif sock.is_dir():
            shutil.rmtree(sock, ignore_errors=True)
        if bundle.is_symlink():  # bound to a warm container: its bundle first, then the link to it
            shutil.rmtree(self.warm_dir / oid, ignore_errors=True)
            bundle.unlink(missing_ok=True)
        else:
            shutil.rmtree(bundle, ignore_errors=True)
        if meta and meta.runtime == "runsc":
            shutil.rmtree(self.oci_root / "runsc" / oid, ignore_errors=True)

    @staticmethod
    def _is_conmon(pid: int, cid: str) -> bool:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(cmd) and cmd[0].endswith(b"conmon") and cid.encode() in cmd

    def _config(self, cid: str) -> dict[str, Any] | None:
        return self._config_at(self.bundle(cid))

    @staticmethod
    def _config_at(bundle: Path) -> dict[str, Any] | None:
        try:
            cfg = json.loads((bundle / "config.json").read_text())
        except (OSError, ValueError):
            return None
        return cfg if isinstance(cfg, dict) else None

    def _cgroup_from_config(self, bundle: Path) -> str | None:
        return ((self._config_at(bundle) or {}).get("linux") or {}).get("cgroupsPath")

    def list_ids(self) -> list[str]:
        """Containers this runtime has on disk, running or not (for adoption after a restart)."""
        try:
            return sorted(p.name for p in self.containers_dir.iterdir() if p.is_dir() and _ID_RE.match(p.name))
        except FileNotFoundError:
            return []

    def runtime_of(self, cid: str) -> str | None:
        """Which OCI runtime ``cid`` was created with (crun, runc or runsc)."""
        meta = self._meta(cid)
        return meta.runtime if meta else None

    def log_path(self, cid: str) -> Path | None:
        meta = self._meta(cid)
        return Path(meta.log_path) if meta else None

    def cgroup_path(self, cid: str) -> str | None:
        meta = self._meta(cid)
        return meta.cgroup_path if meta else None

    def stats(self, cid: str) -> cgroups.CgroupStats | None:
        """CPU/memory/pids usage from the container's cgroup (sandbox-wide for runsc); None once gone."""
        meta = self._meta(cid)
        if meta is None or meta.cgroup_path is None:
            return None
        return cgroups.read_stats(meta.cgroup_path)

    def update_resources(self, cid: str, cpu: float, cpu_limit: float, memory_bytes: int) -> None:
        """Change CPU shares/quota and the memory limit of a running container in place."""
        from corral.node.runtime.spec import CFS_PERIOD, SHARES_PER_CORE

        meta = self._meta(cid)
        if meta is None:
            raise NotFound(f"container {cid} does not exist on this node")
        res: dict[str, Any] = {"cpu": {"period": CFS_PERIOD, "quota": -1}}
        if cpu > 0:
            res["cpu"]["shares"] = max(2, int(round(cpu * SHARES_PER_CORE)))
        if cpu_limit > 0:
            res["cpu"]["quota"] = max(1000, int(round(cpu_limit * CFS_PERIOD)))
        if memory_bytes > 0:
            res["memory"] = {"limit": memory_bytes, "swap": memory_bytes}
        path = self.bundle(cid) / "resources.json"
        atomic_write(path, json.dumps(res), durable=False)
        if meta.runtime == "runsc":
            if meta.cgroup_path is None:
                raise RuntimeFailure(f"container {cid} has no cgroup to update")
            try:
                cgroups.write_limits(meta.cgroup_path, res)
            except OSError as e:
                raise RuntimeFailure(f"cannot update the limits of {cid}: {e}") from e
            return
        self._oci(cid, "update", "--resources", str(path), self.oci_id(cid, meta), meta=meta)
