"""The node's virtual networks: one in-process corral-vnet manager per subnet network.

The control plane says what each network is on this node (its block, the
routes to other nodes' blocks, its security rules) through
``config_for(subnet_id)``; this class keeps one ``VnetNetworkManager`` per
network, made on first use and found again from disk after a restart, so a
sandbox can always be deleted even when its network is no longer asked for.
"""

from __future__ import annotations

import builtins
import json
import logging
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from corral.errors import NetworkError, NotFound
from corral.net.vnet import node as vnet_node
from corral.net.vnet.config import VnetConf
from corral.net.vnet.nsg import SecurityRule
from corral.node.network.claims import HostPortClaims
from corral.node.network.etcfiles import DnsSettings
from corral.node.network.records import PortMapping, Sandbox
from corral.node.network.vnet_backend import VnetNetworkConfig, VnetNetworkManager

log = logging.getLogger(__name__)

ConfigSource = Callable[[str | None], VnetConf]


class NetworkSet:
    def __init__(
        self,
        state_dir: Path,
        config_for: ConfigSource,
        pool_size: int = 0,
        on_network: Callable[[VnetConf], None] | None = None,
        netns_prefix: str = "corral-",
    ) -> None:
        self.state_dir = state_dir
        self.config_for = config_for
        self.pool_size = pool_size
        self.netns_prefix = netns_prefix  # several agents on one machine (tests) keep their namespaces apart
        self.on_network = on_network
        self._lock = threading.Lock()
        self._managers: dict[str, VnetNetworkManager] = {}
        self._by_subnet: dict[str | None, str] = {}
        self._retiring: set[str] = set()  # networks deleted upstream, removed once their sandboxes are gone
        self._ports = HostPortClaims()  # a host port is the node's, whatever network maps it
        state_dir.mkdir(parents=True, exist_ok=True)
        for d in sorted(p for p in state_dir.iterdir() if (p / "vnet.json").exists()):
            conf = VnetConf.model_validate_json((d / "vnet.json").read_text())
            self._open(conf)
        self._settle()

    # the NetworkManager surface the node host uses ----------------------------
    def create(
        self,
        sandbox_id: str,
        hostname: str,
        port_mappings: builtins.list[PortMapping] | None = None,
        dns: DnsSettings | None = None,
        subnet_id: str | None = None,
    ) -> Sandbox:
        existing = self._holder(sandbox_id)
        if existing is not None:
            return existing.create(sandbox_id, hostname, port_mappings, dns)
        return self.manager(subnet_id).create(sandbox_id, hostname, port_mappings, dns)

    def reserve(self) -> tuple[str, Sandbox] | None:
        """A ready slot of the default network, set aside (VnetNetworkManager.reserve)."""
        return self.manager(None).reserve()

    def release(self, slot: str) -> None:
        self.manager(None).release(slot)

    def create_from(self, sandbox_id: str, slot: str, hostname: str,
                    port_mappings: builtins.list[PortMapping] | None = None,
                    dns: DnsSettings | None = None) -> Sandbox:
        """A new sandbox of the default network, made from reserved ``slot``."""
        return self.manager(None).create(sandbox_id, hostname, port_mappings, dns, slot=slot)

    def get(self, sandbox_id: str) -> Sandbox | None:
        holder = self._holder(sandbox_id)
        return holder.get(sandbox_id) if holder else None

    def list(self) -> builtins.list[Sandbox]:
        return [sb for m in self._all() for sb in m.list()]

    def delete(self, sandbox_id: str) -> None:
        for m in self._all():  # idempotent in every network; only the holder has work to do
            m.delete(sandbox_id)

    def set_group_rules(self, sandbox_id: str, rules: builtins.list[SecurityRule]) -> None:
        """Security rules for one sandbox alone (its group's own security group), live."""
        holder = self._holder(sandbox_id)
        if holder is None:
            raise NetworkError(f"no network sandbox {sandbox_id!r} on this node")
        holder.set_security_rules(rules, sandbox_id)

    def recover(self) -> None:
        for m in self._all():
            m.recover()

    def teardown(self) -> None:
        """Remove every network of this node (their sandboxes must be gone)."""
        for name, m in list(self._managers.items()):
            m.recover()
            m.teardown()  # drains the standby pool too
            shutil.rmtree(self.state_dir / name, ignore_errors=True)
            with self._lock:
                del self._managers[name]
                self._by_subnet = {k: v for k, v in self._by_subnet.items() if v != name}

    def stop(self) -> None:
        for m in self._all():
            m.stop_pool()

    # networks ------------------------------------------------------------------
    def manager(self, subnet_id: str | None) -> VnetNetworkManager:
        with self._lock:
            name = self._by_subnet.get(subnet_id)
            if name is not None:
                return self._managers[name]
        conf = self._config(subnet_id)
        with self._lock:
            m = self._managers.get(conf.name)
        if m is None or m.conf != conf:
            m = self._open(conf, fresh=True)
            self._settle()  # a network waiting for an appliance on this one's bridge
        with self._lock:
            known = subnet_id in self._by_subnet
            self._by_subnet[subnet_id] = conf.name
        if not known:
            # A refresh that ran while this network was being opened did not know it: read its configuration
            # once more, so a block another node was granted meanwhile is routed here too.
            again = self._config(subnet_id, conf.name)
            if again != conf:
                m = self._open(again, fresh=True)
        return m

    def _config(self, subnet_id: str | None, name: str | None = None) -> VnetConf:
        """The network's configuration as the control plane has it, its plugin state in this node's
        directory of the network (``name``: the one it is known by here)."""
        conf = self.config_for(subnet_id)
        return conf.model_copy(update={"data_dir": self.state_dir / (name or conf.name) / "plugin"})

    def refresh(self) -> None:
        """Re-read every known network's configuration (peers, security rules) and apply changes live;
        a network that no longer exists is removed from the node once it has no sandboxes left."""
        with self._lock:
            subnets = dict(self._by_subnet)
        for name in list(self._retiring):
            self._retire(None, name)
        for subnet_id, name in subnets.items():
            try:
                conf = self._config(subnet_id, name)
            except NotFound:
                self._retire(subnet_id, name)
                continue
            except Exception:  # one network's trouble must not keep the others stale
                log.exception("network %s: could not refresh its configuration", name)
                continue
            with self._lock:
                m = self._managers.get(name)
            if m is not None and m.conf != conf:
                self._open(conf, fresh=True)
        self._settle()

    def _settle(self) -> None:
        """Networks whose set-up was incomplete (an appliance route to a network opened after them)
        try again; a network already set up costs a dictionary lookup."""
        for m in self._all():
            try:
                vnet_node.ensure(m.conf, retry=True)
            except Exception:
                log.exception("network %s: could not complete its set-up", m.conf.name)

    def _retire(self, subnet_id: str | None, name: str) -> None:
        with self._lock:
            self._by_subnet.pop(subnet_id, None)
            m = self._managers.get(name)
        self._retiring.add(name)
        if m is None or m.list():
            return  # groups still use it: it goes with the last of them (a later refresh)
        self._retiring.discard(name)
        m.recover()
        m.teardown()
        shutil.rmtree(self.state_dir / name, ignore_errors=True)
        with self._lock:
            self._managers.pop(name, None)

    def _open(self, conf: VnetConf, fresh: bool = False) -> VnetNetworkManager:
        d = self.state_dir / conf.name
        d.mkdir(parents=True, exist_ok=True)
        with self._lock:
            old = self._managers.get(conf.name)
            if old is not None and old.conf == conf:
                return old
            if old is not None:
                old.stop_pool()
            if fresh:
                tmp = d / "vnet.json.tmp"
                tmp.write_text(json.dumps(conf.model_dump(mode="json", by_alias=True)))
                tmp.replace(d / "vnet.json")
            vnet_node.ensure(conf)  # bridge, routes, chains: before any sandbox or listener needs them
            vnet_node.set_vnet_rules(conf, conf.security_rules)
            vnet_node.apply_security(conf)
            m = VnetNetworkManager(VnetNetworkConfig(vnet=conf, state_dir=d, pool_size=self.pool_size,
                                                     netns_prefix=self.netns_prefix), self._ports)
            self._managers[conf.name] = m
        if self.on_network is not None:
            try:
                self.on_network(conf)
            except Exception:  # a missing DNS listener must not stop groups from starting
                log.exception("network %s: on_network hook failed", conf.name)
        return m

    def _all(self) -> builtins.list[VnetNetworkManager]:
        with self._lock:
            return builtins.list(self._managers.values())

    def _holder(self, sandbox_id: str) -> VnetNetworkManager | None:
        for m in self._all():
            if m.get(sandbox_id) is not None:
                return m
        return None

    def gateway_for(self, subnet_id: str | None) -> str | None:
        return str(self.manager(subnet_id).conf.ipam.gateway_ip)

    def gateways(self) -> dict[str, str]:
        """Network name -> this node's gateway address on it (where sandboxes reach the host)."""
        return {name: str(m.conf.ipam.gateway_ip) for name, m in self._managers.items()}

    def pool_counts(self) -> dict[str, int]:
        """Network name -> standby sandboxes ready in its pool (telemetry)."""
        with self._lock:
            managers = dict(self._managers)
        return {name: m.pool_count() for name, m in managers.items()}
