"""What a node offers the group workers: sandboxes, containers and their files.

Joins the image store, the network and the OCI runtime, and owns the naming
of everything a group leaves on the host, so that teardown (and the clean-up
of groups deleted while the agent was down) can find all of it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.errors import RuntimeFailure
from corral.model.group import ContainerProperties, GroupProperties, InitContainerProperties, IpAddress, Volume
from corral.model.group import RegistryCredential as GroupCredential
from corral.model.group import SecurityContext as GroupSecurity
from corral.model.sysctl import Sysctl
from corral.node.images.store import Image, ImageStore, RegistryCredential
from corral.node.network.backend import NodeNetwork
from corral.node.network.etcfiles import DnsSettings
from corral.node.network.records import PortMapping, Sandbox
from corral.node.network.sysctls import apply as apply_sysctls
from corral.node.runtime import warm
from corral.node.runtime.cgroups import remove_cgroup
from corral.node.runtime.runtime import ContainerState, Runtime
from corral.node.runtime.spec import MountSpec, SecurityContext, SpecRequest, build_spec
from corral.node.volumes.manager import VolumeManager, as_spec
from corral.node.warm_pool import WarmEntry, WarmPool

log = logging.getLogger(__name__)

GIB = 1024**3
UID_LEN = 16


def container_id(uid: str, name: str, init: bool = False) -> str:
    """Runtime id of a container: the group uid first, so leftovers map back to their group."""
    return f"{uid}-{'i' if init else 'c'}-{name}"


def group_of(cid: str) -> str:
    return cid[:UID_LEN]


def split_container_id(cid: str) -> tuple[str, str, bool] | None:
    """``container_id`` read back: (group uid, container name, init); None for an id it did not make."""
    mark = cid[UID_LEN:UID_LEN + 3]
    if mark not in ("-c-", "-i-"):
        return None
    return cid[:UID_LEN], cid[UID_LEN + 3:], mark == "-i-"


def port_mappings(ip: IpAddress | None) -> list[PortMapping]:
    """The node's host ports a group publishes: those of a Public group. A Private group has no public
    address: its ports are reached at its own address in its virtual network and claim nothing here."""
    if ip is None or ip.type != "Public":
        return []
    return [
        PortMapping(host_port=p.publicPort or p.port, container_port=p.port,
                    protocol="udp" if p.protocol == "UDP" else "tcp")
        for p in ip.ports
    ]


def isolation_of(props: GroupProperties, default: str = "default") -> str:
    """'sandboxed' (gVisor) or 'default' (crun): the group's field, else its SKU, else the node default."""
    if props.isolation is not None:
        return props.isolation
    if props.sku == "Confidential":
        return "sandboxed"
    return default


def security_of(sc: GroupSecurity | None) -> SecurityContext:
    if sc is None:
        return SecurityContext()
    caps = sc.capabilities
    return SecurityContext(
        privileged=bool(sc.privileged),
        capabilities_add=list(caps.add or []) if caps else [],
        capabilities_drop=list(caps.drop or []) if caps else [],
        run_as_user=sc.runAsUser,
        run_as_group=sc.runAsGroup,
        supplemental_groups=list(sc.supplementalGroups or []),
        allow_privilege_escalation=sc.allowPrivilegeEscalation,
        seccomp="unconfined" if (sc.seccompProfile or "").lower() == "unconfined" else "default",
    )


def volume_mounts(
    props: ContainerProperties | InitContainerProperties, volumes: list[Volume] | None, paths: dict[str, Path]
) -> list[MountSpec]:
    """Bind mounts for a container's volumeMounts; read-only if the mount or the volume says so."""
    by_name = {v.name: v for v in volumes or []}
    out = []
    for m in props.volumeMounts or []:
        vol = by_name.get(m.name)
        if vol is None or m.name not in paths:
            raise RuntimeFailure(f"volume {m.name!r} is not prepared on this node")
        out.append(MountSpec(source=paths[m.name], destination=m.mountPath,
                             read_only=m.readOnly or as_spec(vol).read_only))
    return out


def warm_equivalent(cold: dict[str, Any], warm_spec: dict[str, Any]) -> bool:
    """Whether a warm container made from ``warm_spec`` is the container ``cold`` would make, but for
    what its bind sets: command, environment, working directory and cpu/memory/pids limits (and the
    hostname, which the sandbox sets, and the cgroup's name)."""
    def neutral(spec: dict[str, Any]) -> dict[str, Any]:
        out = {**spec, "process": {k: v for k, v in spec["process"].items() if k not in ("args", "env", "cwd")},
               "hostname": ""}
        linux = {**spec["linux"], "cgroupsPath": ""}
        linux["resources"] = {k: v for k, v in linux.get("resources", {}).items()
                              if k not in ("cpu", "memory", "pids")}
        out["linux"] = linux
        return out

    return neutral(cold) == neutral(warm_spec)


class ExitDispatcher:
    """One inotify watch on conmon's exit directory for the whole node.

    Wakes the worker of the group whose container exited, so workers need not
    poll running containers (250 groups polling twice a second cost a core).
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._subs: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def subscribe(self, uid: str, callback: Callable[[], None]) -> None:
        with self._lock:
            self._subs[uid] = callback
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="exit-dispatcher", daemon=True)
                self._thread.start()

    def unsubscribe(self, uid: str) -> None:
        with self._lock:
            self._subs.pop(uid, None)

    def _run(self) -> None:
        watcher = self._runtime.exit_watcher()
        while True:
            try:
                cids = watcher.wait(5.0)
            except OSError:
                log.exception("exit watch failed; workers fall back to their periodic sweep")
                return
            for cid in cids:
                with self._lock:
                    callback = self._subs.get(group_of(cid))
                if callback is not None:
                    callback()


def registry_credentials(creds: list[GroupCredential]) -> list[RegistryCredential]:
    return [RegistryCredential(server=c.server, username=c.username, password=c.password) for c in creds]


class NodeHost:
    def __init__(
        self,
        root: Path,
        images: ImageStore,
        runtime: Runtime,
        network: NodeNetwork,
        public_ip: str,
        cgroup_parent: str = "/corral",
        volumes: VolumeManager | None = None,
        allow_privileged: bool = False,
        isolation: str = "default",
        dns_zone: str = "corral.local",
        dns_enabled: bool = False,
        warm_containers: int = 0,
    ) -> None:
        self.root = root
        self.images = images
        self.runtime = runtime
        self.network = network
        self.public_ip = public_ip
        self.dns_zone = dns_zone
        self.dns_enabled = dns_enabled
        self.cgroup_parent = cgroup_parent
        self.volumes = volumes or VolumeManager(root / "volumes", root / "shares")
        # Operator settings: whether privileged containers may run, and the default isolation level.
        self.allow_privileged = allow_privileged
        self.isolation = isolation
        self._runtimes: dict[str, Runtime] = {runtime.name: runtime}
        self.exits = ExitDispatcher(runtime)
        (root / "groups").mkdir(parents=True, exist_ok=True)
        self.warm = WarmPool(root / "warm", warm_containers, runtime, images, network, cgroup_parent,
                             self._warm_spec)
        self._bound: dict[str, WarmEntry] = {}  # group uid -> the warm container its new sandbox came with
        self._bound_lock = threading.Lock()

    def runtime_for(self, isolation: str) -> Runtime:
        """The OCI runtime of an isolation level; all share one state dir, so any of them can manage any container."""
        name = "runsc" if isolation == "sandboxed" else (
            self.runtime.name if self.runtime.name != "runsc" else "crun")
        if name not in self._runtimes:
            self._runtimes[name] = Runtime(self.runtime.state_dir, runtime=name)
        return self._runtimes[name]

    # paths -----------------------------------------------------------------
    def group_dir(self, uid: str) -> Path:
        return self.root / "groups" / uid

    def log_path(self, uid: str, name: str, init: bool = False) -> Path:
        return self.group_dir(uid) / "logs" / f"{'init-' if init else ''}{name}.log"

    def _container_dir(self, uid: str, cid: str) -> Path:
        return self.group_dir(uid) / "containers" / cid

    # sandboxes -------------------------------------------------------------
    def ensure_sandbox(
        self, uid: str, hostname: str, ip: IpAddress | None, subnet_id: str | None = None,
        dns: DnsSettings | None = None, sysctls: list[Sysctl] | None = None, warm_image: str | None = None,
    ) -> Sandbox:
        """``warm_image``: the group's only container's image, when it may start warm (the worker says):
        a new sandbox then comes with a warm container of that image, if the pool has one."""
        entry = self._claim_warm(uid, warm_image) if warm_image and subnet_id is None else None
        if entry is not None:
            slot, entry.slot = entry.slot, None  # from here on the slot is the group's (or, broken, gone)
            assert slot is not None
            try:
                sandbox = self.network.create_from(uid, slot, hostname, port_mappings(ip), dns)
            except BaseException:
                entry.slot = slot  # not made (a failed create undoes its sandbox): the slot is freed too
                self.warm.discard(entry)
                raise
            if sandbox.netns == entry.sandbox.netns:
                with self._bound_lock:
                    self._bound[uid] = entry
            else:  # the slot was broken: the sandbox was built afresh, the warm container is not in it
                self.warm.discard(entry)
        else:
            sandbox = self.network.create(uid, hostname=hostname, port_mappings=port_mappings(ip), dns=dns,
                                          subnet_id=subnet_id)
        if sysctls:  # before any container starts (a router forwards from its first packet)
            apply_sysctls(sandbox.netns_path, sysctls)
        return sandbox

    def nameserver_for(self, subnet_id: str | None) -> str | None:
        """Where a group's resolver reaches Corral's DNS: its network's gateway (None: DNS is off)."""
        return self.network.gateway_for(subnet_id) if self.dns_enabled else None

    def _claim_warm(self, uid: str, ref: str) -> WarmEntry | None:
        if not self.warm.enabled or self.network.get(uid) is not None:
            return None  # a sandbox made before keeps its containers as they are
        image = self.images.get(ref)
        return self.warm.claim(image) if image is not None else None

    def _drop_bound(self, uid: str) -> None:
        """A warm container a group's sandbox came with but none of its containers took: discarded."""
        with self._bound_lock:
            entry = self._bound.pop(uid, None)
        if entry is not None:
            self.warm.discard(entry)

    def remove_sandbox(self, uid: str) -> None:
        self._drop_bound(uid)
        self.network.delete(uid)

    # containers ------------------------------------------------------------
    def run_container(
        self,
        uid: str,
        name: str,
        props: ContainerProperties | InitContainerProperties,
        image: Image,
        sandbox: Sandbox,
        hostname: str,
        init: bool = False,
        mounts: list[MountSpec] | None = None,
        isolation: str = "default",
    ) -> ContainerState:
        cid = container_id(uid, name, init)
        # A leftover of an earlier attempt (crash mid-start) would make crun refuse the id.
        self.remove_container(uid, cid)
        cdir = self._container_dir(uid, cid)
        log_path = self.log_path(uid, name, init)
        with self._bound_lock:
            entry = self._bound.pop(uid, None)
        if entry is not None:
            started = self._run_warm(entry, uid, cid, log_path, props, image, sandbox, hostname, init, mounts,
                                     isolation)
            if started is not None:
                self.warm.want(image)
                return started
        cdir.mkdir(parents=True, exist_ok=True)
        runtime = self.runtime_for(isolation)
        # conmon first: its start overlaps with the rootfs mount and the spec below.
        launched = runtime.launch(cid, log_path)
        try:
            rootfs = self.images.mount_rootfs(image, cdir)
            req = self._spec_request(uid, cid, props, image, sandbox, rootfs, hostname)
            req.mounts.extend(mounts or [])
            spec = build_spec(req)
            started = runtime.run(cid, spec, log_path, launched=launched)
        except BaseException:
            if launched is not None:
                launched.cancel()
            self.remove_container(uid, cid)
            raise
        if not init and not mounts and isolation == "default" and runtime is self.runtime:
            self.warm.want(image)
        return started

    def _run_warm(
        self, entry: WarmEntry, uid: str, cid: str, log_path: Path,
        props: ContainerProperties | InitContainerProperties,
        image: Image, sandbox: Sandbox, hostname: str, init: bool, mounts: list[MountSpec] | None,
        isolation: str,
    ) -> ContainerState | None:
        """Start ``cid`` in the warm container its sandbox came with; None (the warm one discarded) when
        the spec it would get cold differs in anything but its command, environment and limits."""
        cdir = self._container_dir(uid, cid)
        rootfs = cdir / "merged"
        req = self._spec_request(uid, cid, props, image, sandbox, rootfs, hostname)
        req.mounts.extend(mounts or [])
        spec = build_spec(req)
        # The warm container was made in this sandbox's slot, whose paths moved with it: its spec, with
        # today's paths, is this one.
        made = self._warm_spec(entry.image, sandbox, rootfs, req.cgroup_path)
        if (init or isolation != "default" or image.digest != entry.image.digest
                or not warm_equivalent(spec, made)):
            self.warm.discard(entry)
            return None
        process, resources = spec["process"], spec["linux"]["resources"]
        try:
            self.images.move_rootfs(entry.rootfs_dir, cdir)
            self._link_log(entry.container.log_path, log_path)
            return self.runtime.bind_warm(entry.container, cid, process["cwd"], process["args"], process["env"],
                                          resources)
        except BaseException:
            entry.container.fifos.close()
            self.remove_container(uid, cid)
            self.warm.discard(entry)  # what the move and the bind left of it
            raise

    @staticmethod
    def _link_log(warm_log: Path, log_path: Path) -> None:
        """The container's log is the warm container's, whose conmon already writes it: one more name."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
        os.link(warm_log, log_path)

    def _warm_spec(self, image: Image, sandbox: Sandbox, rootfs: Path, cgroup_path: str) -> dict[str, Any]:
        """A warm container's spec: a cold start's (``_spec_request``) without a container's command,
        environment or limits, which the bind brings."""
        req = SpecRequest(rootfs=rootfs, args=list(warm.ARGS), cwd="/", cpu=0, cpu_limit=0, memory_bytes=0,
                          **self._sandbox_fields(image, sandbox, sandbox.id, cgroup_path))
        return build_spec(req)

    @staticmethod
    def _sandbox_fields(image: Image, sandbox: Sandbox, hostname: str, cgroup_path: str) -> dict[str, Any]:
        """What a container's spec takes from its image and its group's sandbox."""
        return {
            "user": image.config.user,
            "hostname": hostname,
            "cgroup_path": cgroup_path,
            "namespace_paths": {"network": sandbox.netns_path, "uts": sandbox.uts_path, "ipc": sandbox.ipc_path},
            "mounts": [
                MountSpec(source=sandbox.resolv_conf, destination="/etc/resolv.conf", read_only=True),
                MountSpec(source=sandbox.hosts, destination="/etc/hosts", read_only=True),
                MountSpec(source=sandbox.hostname_file, destination="/etc/hostname", read_only=True),
            ],
        }

    def _spec_request(
        self,
        uid: str,
        cid: str,
        props: ContainerProperties | InitContainerProperties,
        image: Image,
        sandbox: Sandbox,
        rootfs: Path,
        hostname: str,
    ) -> SpecRequest:
        cfg = image.config
        if props.command:
            args = [*props.command, *(props.args or [])]
        elif props.args is not None:  # Kubernetes' args alone: the image's entrypoint with these arguments
            args = [*cfg.entrypoint, *props.args]
        else:
            args = [*cfg.entrypoint, *cfg.cmd]
        if not args:
            args = ["sh"]
        env = dict(e.split("=", 1) for e in cfg.env if "=" in e)
        group_fields = {"privateIp": sandbox.ip, "nodeIp": self.public_ip}
        for var in props.environmentVariables or []:
            if var.groupField is not None:
                env[var.name] = group_fields[var.groupField]
                continue
            env[var.name] = var.value if var.value is not None else (var.secureValue or "")
        if isinstance(props, ContainerProperties):
            req = props.resources.requests
            lim = props.resources.limits
            cpu, memory = req.cpu, req.memoryInGB
            cpu_limit = lim.cpu if lim and lim.cpu else cpu
            mem_limit = lim.memoryInGB if lim and lim.memoryInGB else memory
            cwd = props.workingDir or cfg.working_dir or "/"
        else:  # init containers share the group's resources; bound them by a modest default
            cpu, cpu_limit, mem_limit = 1.0, 1.0, 1.0
            cwd = props.workingDir or cfg.working_dir or "/"
        return SpecRequest(
            rootfs=rootfs,
            args=args,
            env=[f"{k}={v}" for k, v in env.items()],
            cwd=cwd,
            cpu=cpu,
            cpu_limit=cpu_limit,
            memory_bytes=int(mem_limit * GIB),
            security=security_of(props.securityContext),
            **self._sandbox_fields(image, sandbox, hostname, f"{self.cgroup_parent}/{uid}/{cid}"),
        )

    def container_state(self, cid: str) -> ContainerState:
        return self.runtime.state(cid)

    def stop_container(self, cid: str, timeout: float = 10) -> ContainerState:
        return self.runtime.stop(cid, timeout=timeout)

    def remove_container(self, uid: str, cid: str) -> None:
        """Idempotent: no process, cgroup, bundle or rootfs mount of ``cid`` is left."""
        self.runtime.delete(cid)
        cdir = self._container_dir(uid, cid)
        if cdir.exists():
            self.images.unmount_rootfs(cdir)
            shutil.rmtree(cdir, ignore_errors=True)

    # volumes ---------------------------------------------------------------
    def prepare_volumes(self, uid: str, volumes: list[Volume] | None) -> dict[str, Path]:
        """Host directories of the group's volumes (created if needed); idempotent."""
        return self.volumes.prepare(uid, volumes or [])

    def release_volumes(self, uid: str) -> None:
        self.volumes.release(uid)

    # whole groups ----------------------------------------------------------
    def group_uids_on_disk(self) -> set[str]:
        uids = {group_of(cid) for cid in self.runtime.list_ids()}
        uids |= set(self.volumes.groups())
        uids |= {sb.id for sb in self.network.list()}
        uids |= {p.name for p in (self.root / "groups").iterdir() if p.is_dir()}
        return uids

    def containers_of(self, uid: str) -> list[str]:
        # A glob on the group's prefix: no stat of every other group's container.
        return sorted(p.name for p in self.runtime.containers_dir.glob(f"{uid}-*") if group_of(p.name) == uid)

    def teardown_group(self, uid: str) -> None:
        """Remove everything of a group: containers, rootfs mounts, sandbox, files. Idempotent."""
        self._drop_bound(uid)
        for cid in self.containers_of(uid):
            self.stop_container(cid, timeout=5)
            self.remove_container(uid, cid)
        cdir = self.group_dir(uid) / "containers"
        if cdir.exists():
            for leftover in cdir.iterdir():
                self.images.unmount_rootfs(leftover)
        self.network.delete(uid)
        self.volumes.release(uid)
        remove_cgroup(f"{self.cgroup_parent}/{uid}")
        shutil.rmtree(self.group_dir(uid), ignore_errors=True)
