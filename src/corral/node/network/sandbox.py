"""Network sandboxes for container groups, built with the standard CNI plugins.

A sandbox is a pinned network namespace (``/var/run/netns/<name>``) plus pinned
UTS and IPC namespaces under the state dir, an address on the network's bridge
(bridge + host-local + portmap plugins) and the /etc files its containers get.

Crash safety: an intent record is written before anything is built, so a crash
anywhere leaves something ``delete`` (or a re-run of ``create``) can find and
undo. All on-disk state lives under ``state_dir``; a restarted agent sees the
same sandboxes through ``get``/``list``.
"""

from __future__ import annotations

import builtins
import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from corral.errors import Conflict, CorralError, NetworkError, NetworkFeatureUnsupported
from corral.net.vnet.nsg import SecurityRule
from corral.node.network import cni, etcfiles, iptables, nsfiles, records
from corral.node.network.claims import HostPortClaims, SandboxLocks, check_sandbox_id
from corral.node.network.etcfiles import DnsSettings
from corral.node.network.records import PortMapping, Sandbox, SandboxRecord

_IFNAME = "eth0"
_HOSTPORT_CHAINS = (
    # (chain, chains that jump to it), in an order where nothing jumps to a removed chain
    ("CNI-HOSTPORT-DNAT", ("PREROUTING", "OUTPUT")),
    ("CNI-HOSTPORT-SNAT", ("POSTROUTING",)),
    ("CNI-HOSTPORT-MASQ", ("POSTROUTING",)),
    ("CNI-HOSTPORT-SETMARK", ("PREROUTING", "OUTPUT")),
)


class NetworkConfig(BaseModel):
    name: str = "corral"
    bridge: str = "corral0"
    subnet: str = "10.88.0.0/16"
    gateway: str | None = None  # default: the subnet's first address
    state_dir: Path
    cni_bin_dir: Path = Path("/usr/lib/cni")
    dns_servers: list[str] = Field(default_factory=etcfiles.default_nameservers)
    netns_prefix: str = "corral-"
    cni_version: str = "1.0.0"

    def gateway_ip(self) -> str:
        if self.gateway:
            return self.gateway
        return str(next(ipaddress.ip_network(self.subnet).hosts()))


class _Record(SandboxRecord):
    dns: DnsSettings
    conflist: dict[str, Any]
    cni_result: dict[str, Any] | None = None


class NetworkManager:
    """Create, find and delete sandboxes of one CNI bridge network. Thread-safe."""

    def __init__(self, config: NetworkConfig) -> None:
        self.config = config
        self._root = config.state_dir / "sandboxes"
        self._root.mkdir(parents=True, exist_ok=True)
        (config.state_dir / "ipam").mkdir(parents=True, exist_ok=True)
        self._id_lock = SandboxLocks()
        self._ports = HostPortClaims()
        self._ports.add_holdings(str(self._root), lambda: records.held_ports(self._root, _Record))

    # ---- public API -------------------------------------------------------

    def create(
        self,
        sandbox_id: str,
        hostname: str,
        port_mappings: builtins.list[PortMapping] | None = None,
        dns: DnsSettings | None = None,
        subnet_id: str | None = None,
    ) -> Sandbox:
        """Build the sandbox, or return it if it already exists whole. Rolls back on failure.

        ``subnet_id`` is accepted for the node's sake and ignored: this backend has one network.
        """
        check_sandbox_id(sandbox_id)
        ports = list(port_mappings or [])
        with self._id_lock(sandbox_id):
            rec = self._load(sandbox_id)
            sb = records.finished(self._dir(sandbox_id), rec)
            if sb is not None and records.intact(sb):
                return sb
            if rec is not None or nsfiles.netns_path(self._netns_name(sandbox_id)).exists():
                # Left by a crash (half built, or netns/state out of step): undo, then rebuild.
                self._destroy(sandbox_id, rec)
            self._ports.claim(sandbox_id, [(p.host_port, p.protocol) for p in ports])
            try:
                return self._build(sandbox_id, hostname, ports, dns)
            except BaseException as exc:
                self._destroy(sandbox_id, self._load(sandbox_id))
                if not isinstance(exc, Exception) or isinstance(exc, CorralError):
                    raise
                raise NetworkError(f"creating network sandbox {sandbox_id!r} failed: {exc}") from exc
            finally:
                self._ports.release(sandbox_id)

    def get(self, sandbox_id: str) -> Sandbox | None:
        return records.finished(self._dir(sandbox_id), self._load(sandbox_id))

    def list(self) -> builtins.list[Sandbox]:
        return records.ready(self._root, _Record)

    def delete(self, sandbox_id: str) -> None:
        """Remove everything of the sandbox; a no-op when nothing is left."""
        check_sandbox_id(sandbox_id)
        with self._id_lock(sandbox_id):
            self._destroy(sandbox_id, self._load(sandbox_id), strict=True)

    def recover(self) -> builtins.list[str]:
        """Undo sandboxes a crash left half built; returns their ids. Call at agent start."""
        undone: builtins.list[str] = []
        for d in sorted(self._root.iterdir()):
            with self._id_lock(d.name):
                rec = self._load(d.name)
                sb = records.finished(d, rec)
                if sb is None or not records.intact(sb):
                    self._destroy(d.name, rec)
                    undone.append(d.name)
        return undone

    def set_group_rules(self, sandbox_id: str, rules: builtins.list[SecurityRule]) -> None:
        raise NetworkFeatureUnsupported(
            "this node's network mode (bridge) cannot apply a group's own security group; run it with --network vnet")

    def gateway_for(self, subnet_id: str | None) -> str | None:
        return None  # Corral's DNS does not answer on the plain bridge

    def gateways(self) -> dict[str, str]:
        return {}

    def refresh(self) -> None:
        """Nothing to re-read: the bridge network's configuration is the node's own."""

    def stop(self) -> None:
        """No background work to stop."""

    def teardown(self) -> None:
        """Remove the bridge and the unused global CNI chains once no sandbox is left."""
        if any((d / "state.json").exists() for d in self._root.iterdir()):
            raise Conflict(
                f"network {self.config.name!r} still has sandboxes; delete them before tearing it down",
                target=self.config.name,
            )
        from pyroute2 import IPRoute  # only needed here; keeps the import off the hot path

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=self.config.bridge)
            if idx:
                ipr.link("del", index=idx[0])
        # The CNI-HOSTPORT-* chains are shared by every CNI network on the host: they go
        # only when no port mapping of anyone is left in the DNAT chain.
        if not iptables.chain_rules("nat", "CNI-HOSTPORT-DNAT"):
            for chain, parents in _HOSTPORT_CHAINS:
                iptables.remove_chain("nat", chain, parents)
        shutil.rmtree(self.config.state_dir / "ipam" / self.config.name, ignore_errors=True)

    # ---- building and undoing ----------------------------------------------

    def _build(
        self, sandbox_id: str, hostname: str, ports: builtins.list[PortMapping], dns: DnsSettings | None
    ) -> Sandbox:
        cfg = self.config
        d = self._dir(sandbox_id)
        d.mkdir(parents=True, exist_ok=True)
        netns_name = self._netns_name(sandbox_id)
        dns = dns or DnsSettings(nameservers=list(cfg.dns_servers))
        if not dns.nameservers:
            dns = dns.model_copy(update={"nameservers": list(cfg.dns_servers)})
        conflist = self._conflist(with_portmap=bool(ports))
        rec = _Record(id=sandbox_id, hostname=hostname, netns=netns_name, port_mappings=ports, dns=dns,
                      conflist=conflist)
        self._save(rec)  # intent first: a crash from here on leaves a record to undo

        netns_path = nsfiles.netns_path(netns_name)
        nsfiles.create_namespaces(netns_path, d / "uts", d / "ipc", hostname)
        runtime = _runtime_config(ports)
        try:
            result = cni.add(cfg.cni_bin_dir, conflist, container_id=sandbox_id, netns=str(netns_path),
                             ifname=_IFNAME, runtime=runtime)
        except BaseException:
            rec.cni_result = None
            self._save(rec)
            raise
        rec.cni_result = result
        self._save(rec)
        ip, prefix_len, gateway = _primary_address(result, cfg.gateway_ip())
        resolv, hosts, hostname_file = etcfiles.write_all(d / "etc", ip, hostname, dns)
        sb = Sandbox(
            id=sandbox_id, netns=netns_name, netns_path=str(netns_path), uts_path=str(d / "uts"),
            ipc_path=str(d / "ipc"), ip=ip, gateway=gateway, prefix_len=prefix_len, port_mappings=ports,
            resolv_conf=resolv, hosts=hosts, hostname_file=hostname_file,
        )
        rec.sandbox = sb
        rec.status = "ready"
        self._save(rec)
        return sb

    def _destroy(self, sandbox_id: str, rec: _Record | None, *, strict: bool = False) -> None:
        """Undo everything of a sandbox; with ``strict`` a failed CNI DEL is raised after cleaning up."""
        cfg = self.config
        netns_name = rec.netns if rec is not None else self._netns_name(sandbox_id)
        netns_path = nsfiles.netns_path(netns_name)
        pinned = nsfiles.is_pinned(netns_path)
        conflist = rec.conflist if rec is not None else self._conflist(with_portmap=True)
        runtime: dict[str, Any] = {}
        if rec is not None:
            runtime = _runtime_config(rec.port_mappings)
        failed: NetworkError | None = None
        if rec is None and not pinned:
            # The record is written before anything is built and removed last: nothing is here.
            for f in (netns_path, self._dir(sandbox_id) / "uts", self._dir(sandbox_id) / "ipc"):
                nsfiles.remove_namespace_file(f)
            shutil.rmtree(self._dir(sandbox_id), ignore_errors=True)
            return
        try:
            cni.delete(cfg.cni_bin_dir, conflist, container_id=sandbox_id,
                       netns=str(netns_path) if pinned else "", ifname=_IFNAME,
                       prev=rec.cni_result if rec is not None else None, runtime=runtime)
        except NetworkError as exc:
            failed = exc  # go on: whatever the plugins left is found below by its comment
        if not pinned or failed is not None:
            # Without the netns the bridge plugin cannot find its masquerade rules.
            iptables.purge_by_comment(iptables.cni_comment(cfg.name, sandbox_id))
        nsfiles.remove_namespace_file(netns_path)
        d = self._dir(sandbox_id)
        nsfiles.remove_namespace_file(d / "uts")
        nsfiles.remove_namespace_file(d / "ipc")
        shutil.rmtree(d, ignore_errors=True)
        if failed is not None and strict:
            raise failed

    # ---- state ------------------------------------------------------------

    def _conflist(self, *, with_portmap: bool) -> dict[str, Any]:
        cfg = self.config
        plugins: builtins.list[dict[str, Any]] = [{
            "type": "bridge", "bridge": cfg.bridge, "isGateway": True, "ipMasq": True, "hairpinMode": True,
            "ipam": {
                "type": "host-local", "dataDir": str(cfg.state_dir / "ipam"),
                "ranges": [[{"subnet": cfg.subnet, "gateway": cfg.gateway_ip()}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }]
        if with_portmap:
            plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
        return {"cniVersion": cfg.cni_version, "name": cfg.name, "plugins": plugins}

    def _netns_name(self, sandbox_id: str) -> str:
        return f"{self.config.netns_prefix}{sandbox_id}"

    def _dir(self, sandbox_id: str) -> Path:
        return self._root / sandbox_id

    def _load(self, sandbox_id: str) -> _Record | None:
        return records.load(self._dir(sandbox_id), _Record)

    def _save(self, rec: _Record) -> None:
        records.save(self._dir(rec.id), rec)


def _primary_address(result: dict[str, Any], default_gw: str) -> tuple[str, int, str]:
    """(ip, prefix length, gateway) of the first IPv4 address of a CNI result."""
    for entry in result.get("ips", []):
        iface = ipaddress.ip_interface(entry["address"])
        if iface.version == 4:
            return str(iface.ip), iface.network.prefixlen, entry.get("gateway", default_gw)
    raise NetworkError(f"CNI result has no IPv4 address: {json.dumps(result)[:200]}")


def _runtime_config(ports: list[PortMapping]) -> dict[str, Any]:
    return {"portMappings": [
        {"hostPort": p.host_port, "containerPort": p.container_port, "protocol": p.protocol} for p in ports
    ]}
