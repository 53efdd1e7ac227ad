"""NetworkManager's second backend: corral-vnet called in-process, with a standby pool.

Same methods as ``NetworkManager``. A standby sandbox is a complete network
sandbox (pinned net/uts/ipc namespaces, veth on the vnet bridge, an address)
built ahead of time under ``<state_dir>/pool/<slot>``. ``create`` takes one by
renaming its directory to ``<state_dir>/sandboxes/<id>`` (one atomic rename hands
it over), then only sets the hostname, writes the /etc files and, if asked,
host ports. A background thread keeps the pool at its configured size.

Addresses never leak: each slot's address belongs to the attachment named by the
slot id, recorded in the sandbox state; delete, recover and teardown release it.
"""

from __future__ import annotations

import builtins
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from corral.errors import Conflict, CorralError, InvalidRequest, NetworkCapacityExceeded, NetworkError
from corral.net.vnet import firewall, netops, node, plugin
from corral.net.vnet.config import VnetConf
from corral.net.vnet.nsg import SecurityRule
from corral.node.network import etcfiles, nsfiles, records
from corral.node.network.claims import HostPortClaims, SandboxLocks, check_sandbox_id
from corral.node.network.etcfiles import DnsSettings
from corral.node.network.records import PortMapping, Sandbox, SandboxRecord

T = TypeVar("T")
_IFNAME = "eth0"
# The pool refills this long after the last take: building a slot (netns, veth, address)
# beside the start that took one slows that start, and bursts of creates take several.
REFILL_QUIET = 0.2


class VnetNetworkConfig(BaseModel):
    vnet: VnetConf  # the corral-vnet plugin configuration for this node
    state_dir: Path
    dns_servers: list[str] = Field(default_factory=etcfiles.default_nameservers)
    netns_prefix: str = "corral-"
    pool_size: int = Field(0, ge=0)  # standby sandboxes kept ready; 0 disables the pool
    host_netns: str | None = None  # run host-side work in this netns (tests: a simulated host)


class _Record(SandboxRecord):
    attachment: str  # the CNI container id holding the address (the slot id for pooled ones)


class VnetNetworkManager:
    """create/get/list/delete/teardown over corral-vnet, in-process. Thread-safe."""

    def __init__(self, config: VnetNetworkConfig, ports: HostPortClaims | None = None) -> None:
        """``ports``: the node's host-port claims, shared by all its networks (default: this one's own)."""
        self.config = config
        self.conf = config.vnet
        self._root = config.state_dir / "sandboxes"
        self._pool = config.state_dir / "pool"
        self._root.mkdir(parents=True, exist_ok=True)
        self._pool.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._slot_done = threading.Condition(self._lock)  # a slot the refill was building is ready or gone
        self._building = 0  # slots the refill is building (each holds an address of the node's block)
        self._id_lock = SandboxLocks()
        self._ports = ports or HostPortClaims()
        self._ports.add_holdings(str(self._root), lambda: records.held_ports(self._root, _Record))
        self._ready: builtins.list[str] = []  # slot ids ready to take
        self._reserved: set[str] = set()  # ready slots set aside by reserve() (a warm container's)
        self._broken: builtins.list[str] = []  # pool slots found damaged, to destroy
        self._wake = threading.Event()
        self._last_take = 0.0  # monotonic time a create last took a ready slot
        self._stop = threading.Event()
        self._filler: threading.Thread | None = None
        self.pool_errors: builtins.list[BaseException] = []
        for d in sorted(self._pool.iterdir()):
            rec = _load(d)
            if rec is not None and rec.status == "ready" and rec.sandbox and records.intact(rec.sandbox):
                self._ready.append(rec.id)
        if config.pool_size > 0:
            self.start_pool()

    # ---- public API ---------------------------------------------------------------

    def create(
        self,
        sandbox_id: str,
        hostname: str,
        port_mappings: builtins.list[PortMapping] | None = None,
        dns: DnsSettings | None = None,
        slot: str | None = None,
    ) -> Sandbox:
        """``slot``: a slot ``reserve`` gave out, to build the sandbox from (a new sandbox only)."""
        check_sandbox_id(sandbox_id)
        ports = list(port_mappings or [])
        dns = dns if dns is not None and dns.nameservers else DnsSettings(
            nameservers=list(self.config.dns_servers), search=dns.search if dns else [],
            options=dns.options if dns else [])
        with self._id_lock(sandbox_id):
            d = self._root / sandbox_id
            rec = _load(d)
            sb = records.finished(d, rec)
            if rec is not None and sb is not None and records.intact(sb):
                if rec.port_mappings != ports:  # e.g. a Private group's ports, published by an older version
                    self._repoint(d, rec, ports)
                return sb
            if rec is not None or d.exists():
                self._destroy(d, rec)
            try:
                self._ports.claim(sandbox_id, [(p.host_port, p.protocol) for p in ports])
                with self._lock:
                    taken = self._take_reserved(slot) if slot is not None else self._take_slot()
                if taken is None:
                    try:
                        return self._build(d, sandbox_id, sandbox_id, hostname, ports, dns)
                    except NetworkCapacityExceeded:
                        # The node is at its limit, perhaps only because the refill holds addresses for
                        # slots it is building: those are for groups like this one.
                        taken = self._slot_being_built()
                        if taken is None:
                            raise
                        self._destroy(d, _load(d))
                self._last_take = time.monotonic()
                self._wake.set()
                return self._adopt(*taken, sandbox_id, hostname, ports, dns)
            except BaseException as exc:
                try:
                    self._destroy(d, _load(d))
                except Exception as undo:  # the record stays: recover() or a retry finishes the undo
                    exc.add_note(f"rollback incomplete: {undo}")
                if not isinstance(exc, Exception) or isinstance(exc, CorralError):
                    raise
                raise NetworkError(f"creating network sandbox {sandbox_id!r} failed: {exc}") from exc
            finally:
                self._ports.release(sandbox_id)

    def _repoint(self, d: Path, rec: _Record, ports: builtins.list[PortMapping]) -> None:
        """Make a whole sandbox's host ports ``ports`` (caller holds its id lock)."""
        try:
            self._ports.claim(rec.id, [(p.host_port, p.protocol) for p in ports])
            assert rec.sandbox is not None
            rec.port_mappings, rec.sandbox.port_mappings = ports, ports
            records.save(d, rec)
            self._apply_ports()
        finally:
            self._ports.release(rec.id)

    def get(self, sandbox_id: str) -> Sandbox | None:
        d = self._root / sandbox_id
        return records.finished(d, _load(d))

    def list(self) -> builtins.list[Sandbox]:
        return records.ready(self._root, _Record)

    def delete(self, sandbox_id: str) -> None:
        check_sandbox_id(sandbox_id)
        with self._id_lock(sandbox_id):
            d = self._root / sandbox_id
            self._destroy(d, _load(d))

    def recover(self) -> builtins.list[str]:
        """Undo half-built sandboxes and pool slots a crash left; returns the sandbox ids undone."""
        undone = []
        for d in sorted(self._root.iterdir()):
            with self._id_lock(d.name):
                rec = _load(d)
                sb = records.finished(d, rec)
                if sb is None or not records.intact(sb):
                    self._destroy(d, rec)
                    undone.append(d.name)
        with self._lock:
            ready = set(self._ready) | self._reserved
        for d in sorted(self._pool.iterdir()):
            if d.name not in ready:
                self._destroy(d, _load(d))
        return undone

    def set_security_rules(self, rules: builtins.list[SecurityRule], sandbox_id: str | None = None) -> None:
        """Replace the vnet's (or one sandbox's) security rules, live."""
        attachment = None
        if sandbox_id is not None:
            rec = _load(self._root / sandbox_id)
            if rec is None:
                raise InvalidRequest(f"no network sandbox {sandbox_id!r}", target=sandbox_id)
            attachment = rec.attachment
        self._host(lambda: plugin.set_security_rules(self.conf, rules, attachment, _IFNAME))

    def start_pool(self) -> None:
        with self._lock:
            if self._filler is not None and self._filler.is_alive():
                return
            self._stop.clear()
            self._filler = threading.Thread(target=self._fill_loop, name="corral-vnet-pool", daemon=True)
            self._filler.start()
        self._wake.set()

    def stop_pool(self) -> None:
        """Stop refilling; ready slots stay (they survive a restart and are re-used)."""
        self._stop.set()
        self._wake.set()
        if self._filler is not None:
            self._filler.join()
            self._filler = None

    def wait_pool(self, timeout: float = 30.0) -> bool:
        """Block until the pool is full (tests and benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self._ready) >= self.config.pool_size:
                    return True
            time.sleep(0.01)
        return False

    def pool_count(self) -> int:
        with self._lock:
            return len(self._ready)

    def teardown(self) -> None:
        """Drain the pool and remove the vnet from the node; refuses while sandboxes exist."""
        if any((d / "state.json").exists() for d in self._root.iterdir()):
            raise Conflict(f"network {self.conf.name!r} still has sandboxes; delete them first",
                           target=self.conf.name)
        self.stop_pool()
        with self._lock:
            self._ready.clear()
        for d in sorted(self._pool.iterdir()):
            self._destroy(d, _load(d))
        self._host(lambda: plugin.teardown(self.conf))
        self._ports.drop_holdings(str(self._root))

    # ---- building ------------------------------------------------------------------

    def _host(self, fn: Callable[[], T]) -> T:
        if self.config.host_netns:
            return netops.in_netns(self.config.host_netns, fn)
        return fn()

    def _build(self, d: Path, sid: str, attachment: str, hostname: str, ports: builtins.list[PortMapping],
               dns: DnsSettings | None) -> Sandbox:
        d.mkdir(parents=True, exist_ok=True)
        netns = f"{self.config.netns_prefix}{attachment}"
        rec = _Record(id=sid, attachment=attachment, netns=netns, hostname=hostname, port_mappings=ports)
        records.save(d, rec)  # intent first
        netns_path = nsfiles.netns_path(netns)
        nsfiles.create_namespaces(netns_path, d / "uts", d / "ipc", hostname or sid)
        att = self._host(lambda: plugin.add(self.conf, attachment, str(netns_path), _IFNAME))
        return self._finish(d, rec, att, hostname, ports, dns)

    def _finish(self, d: Path, rec: _Record, att: plugin.Attachment, hostname: str,
                ports: builtins.list[PortMapping], dns: DnsSettings | None) -> Sandbox:
        resolv, hosts, hn = etcfiles.write_all(d / "etc", att.ip, hostname or rec.id,
                                               dns or DnsSettings(nameservers=list(self.config.dns_servers)))
        sb = Sandbox(id=rec.id, netns=rec.netns, netns_path=str(nsfiles.netns_path(rec.netns)),
                     uts_path=str(d / "uts"), ipc_path=str(d / "ipc"), ip=att.ip, gateway=att.gateway,
                     prefix_len=att.prefix_len, port_mappings=ports, resolv_conf=resolv, hosts=hosts,
                     hostname_file=hn)
        rec.sandbox = sb
        if ports:
            rec.status = "creating"
            records.save(d, rec)
            self._apply_ports()
        rec.status = "ready"
        records.save(d, rec)
        return sb

    def _take_slot(self) -> tuple[str, Sandbox] | None:
        """A ready slot whose namespaces are still pinned, with its sandbox (caller holds _lock);
        broken ones are dropped."""
        while self._ready:
            slot = self._ready.pop(0)
            rec = _load(self._pool / slot)
            if rec is not None and rec.sandbox is not None and records.intact(rec.sandbox):
                return slot, rec.sandbox
            self._broken.append(slot)  # the refill thread destroys it outside the lock
            self._wake.set()
        return None

    def reserve(self) -> tuple[str, Sandbox] | None:
        """Set a ready slot aside (None: none ready): ``create(..., slot=)`` takes it, ``release`` destroys it.
        A warm container is built in it, so the group that takes the container gets the slot with it."""
        with self._lock:
            taken = self._take_slot()
            if taken is not None:
                self._reserved.add(taken[0])
                self._wake.set()  # the refill builds a ready slot in its place
            return taken

    def release(self, slot: str) -> None:
        """Destroy a reserved slot (idempotent)."""
        with self._lock:
            self._reserved.discard(slot)
        self._destroy(self._pool / slot, _load(self._pool / slot))

    def _take_reserved(self, slot: str) -> tuple[str, Sandbox] | None:
        """Reserved ``slot``, taken for a sandbox (caller holds _lock); None (and destroyed later) if broken."""
        if slot not in self._reserved:
            raise NetworkError(f"pool slot {slot!r} is not reserved")
        self._reserved.discard(slot)
        rec = _load(self._pool / slot)
        if rec is not None and rec.sandbox is not None and records.intact(rec.sandbox):
            return slot, rec.sandbox
        self._broken.append(slot)
        self._wake.set()
        return None

    def _slot_being_built(self, timeout: float = 30.0) -> tuple[str, Sandbox] | None:
        """Wait for a slot the refill is building (none: None at once) and take it when it is ready."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                taken = self._take_slot()
                if taken is not None or self._building == 0:
                    return taken
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._slot_done.wait(left)

    def _adopt(self, slot: str, pooled: Sandbox, sid: str, hostname: str, ports: builtins.list[PortMapping],
               dns: DnsSettings) -> Sandbox:
        """Take a standby slot for ``sid``: one rename hands over namespaces and address.

        No record is written before the hand-over is done: until then ``sid``'s directory
        holds the slot's record, whose id is not its directory's, which makes it not whole
        (``records.whole``): a crash in between leaves it for ``recover`` to undo.
        """
        d = self._root / sid
        os.rename(self._pool / slot, d)
        rec = _Record(id=sid, attachment=slot, netns=pooled.netns, hostname=hostname, port_mappings=ports)
        nsfiles.set_hostname(d / "uts", hostname or sid)
        att = plugin.Attachment(container_id=slot, ifname=_IFNAME, netns="", ip=pooled.ip,
                                prefix_len=pooled.prefix_len, gateway=pooled.gateway, host_veth="", mac="",
                                host_mac="", bridge_mac="")
        return self._finish(d, rec, att, hostname, ports, dns)

    def _fill_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                broken, self._broken = self._broken, []
                need = self.config.pool_size - len(self._ready)
            for slot in broken:
                try:
                    self._destroy(self._pool / slot, _load(self._pool / slot))
                except Exception as exc:
                    self.pool_errors.append(exc)
            if need <= 0:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            quiet = self._last_take + REFILL_QUIET - time.monotonic()
            if quiet > 0:
                self._stop.wait(quiet)
                continue
            slot = "pool-" + secrets.token_hex(4)
            d = self._pool / slot
            with self._lock:
                self._building += 1
            built = False
            try:
                self._build(d, slot, slot, slot, [], None)
                built = True
            except BaseException as exc:  # keep the agent alive; leave nothing half built
                self.pool_errors.append(exc)
                try:
                    self._destroy(d, _load(d))
                except Exception as again:
                    self.pool_errors.append(again)
            finally:
                with self._lock:
                    self._building -= 1
                    if built:
                        self._ready.append(slot)
                    self._slot_done.notify_all()
            if not built:
                self._stop.wait(1.0)

    # ---- undoing -------------------------------------------------------------------

    def _destroy(self, d: Path, rec: _Record | None) -> None:
        """Remove everything of a sandbox or slot directory (idempotent)."""
        if rec is not None:
            netns_path = str(nsfiles.netns_path(rec.netns))
            self._host(lambda: plugin.delete(self.conf, rec.attachment, netns_path, _IFNAME))
            had_ports = bool(rec.port_mappings)
            nsfiles.remove_namespace_file(Path(netns_path))
        else:
            had_ports = False
            # No record: the slot or sandbox id is the attachment (a crash before the first save).
            self._host(lambda: plugin.delete(self.conf, d.name, None, _IFNAME))
            nsfiles.remove_namespace_file(nsfiles.netns_path(f"{self.config.netns_prefix}{d.name}"))
        nsfiles.remove_namespace_file(d / "uts")
        nsfiles.remove_namespace_file(d / "ipc")
        shutil.rmtree(d, ignore_errors=True)
        if had_ports:
            self._apply_ports()

    # ---- host ports ------------------------------------------------------------------

    def _apply_ports(self) -> None:
        ports: builtins.list[firewall.HostPort] = []
        for d in self._root.iterdir():
            rec = _load(d)
            if rec is None or rec.sandbox is None:
                continue
            for p in rec.port_mappings:
                ports.append(firewall.HostPort(p.host_port, p.container_port, p.protocol, rec.sandbox.ip, rec.id))

        def apply() -> None:
            with node.node_lock(self.conf):
                firewall.apply_host_ports(node.names(self.conf), self.conf.ipam.node_block, ports)

        self._host(apply)


def _load(d: Path) -> _Record | None:
    return records.load(d, _Record)


def vnet_conf(doc: dict[str, Any]) -> VnetConf:
    return VnetConf.model_validate(doc)
