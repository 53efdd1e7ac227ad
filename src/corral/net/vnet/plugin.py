"""The CNI verbs of corral-vnet as library calls: ADD, DEL, CHECK, GC, STATUS.

The executable (cli.py) parses stdin/env into these arguments; the node agent
calls them directly. Each verb is idempotent and converges after a crash: the
address is allocated with its intent on disk before anything is configured, and
per-attachment records let DEL and GC undo whatever a crash left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

from corral.errors import CorralError, NetworkError
from corral.net.vnet import attachments, guard, netops, node, routing
from corral.net.vnet.attachments import Attachment
from corral.net.vnet.attachments import load as load_attachment
from corral.net.vnet.config import VnetConf
from corral.net.vnet.ipam import AddressStore, attachment_key
from corral.net.vnet.nsg import SecurityRule

# CNI spec error codes
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODE = 6
ERR_INVALID_CONFIG = 7
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50
ERR_CHECK_FAILED = 101  # plugin specific: CHECK found the attachment not as ADD left it
ERR_CAPACITY = 102  # plugin specific: node block or sandbox limit exhausted


class CniFailure(NetworkError):
    """A CNI verb failed; ``cni_code`` is what the executable reports."""

    def __init__(self, cni_code: int, message: str, details: str = "") -> None:
        super().__init__(message)
        self.cni_code = cni_code
        self.details = details


def host_veth_name(key: str) -> str:
    return "cv" + hashlib.sha256(key.encode()).hexdigest()[:11]


def store(conf: VnetConf) -> AddressStore:
    ipam = conf.ipam
    return AddressStore(conf.net_dir / "ipam", ipam.block_net, reserved=[ipam.gateway_ip],
                        limit=conf.max_sandboxes)


def result(conf: VnetConf, att: Attachment, dns: dict[str, Any] | None = None) -> dict[str, Any]:
    """The CNI result for an attachment, in the config's cniVersion."""
    ip: dict[str, Any] = {"address": f"{att.ip}/{att.prefix_len}", "gateway": att.gateway, "interface": 2}
    if conf.cni_version.startswith("0."):
        ip["version"] = "4"
    res: dict[str, Any] = {
        "cniVersion": conf.cni_version,
        "interfaces": [
            {"name": conf.bridge_name, "mac": att.bridge_mac},
            {"name": att.host_veth, "mac": att.host_mac},
            {"name": att.ifname, "mac": att.mac, "sandbox": att.netns},
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": att.gateway}],
    }
    if dns:
        res["dns"] = dns
    return res


def add(conf: VnetConf, container_id: str, netns: str, ifname: str = "eth0") -> Attachment:
    """Attach the sandbox at ``netns`` to the vnet; idempotent for the same attachment."""
    if not netns or not os.path.exists(netns):
        raise CniFailure(ERR_INVALID_ENV, f"network namespace {netns!r} does not exist")
    bridge_idx, bridge_mac = node.ensure(conf)
    key = attachment_key(container_id, ifname)
    old = load_attachment(conf, container_id, ifname)
    if old is not None and old.netns == netns:
        have = netops.sandbox_addresses(netns, ifname)
        if have and f"{old.ip}/{old.prefix_len}" in have and netops.host_link_master(old.host_veth) == bridge_idx:
            _admit(conf, old)
            return old
    st = store(conf)
    ip = st.allocate(container_id, ifname)  # intent + claim on disk before anything is built
    host = host_veth_name(key)
    try:
        ipam = conf.ipam
        host_mac, mac = netops.add_veth(host, netns, ifname, bridge_idx, conf.mtu)
        # The subnet's route table is mirrored inside the sandbox, on the same netlink socket.
        mirror = routing.sandbox_route_args(routing.sandbox_routes(conf), str(ipam.gateway_ip))
        netops.configure_sandbox(netns, ifname, str(ip), ipam.block_net.prefixlen, str(ipam.gateway_ip), mirror)
        att = Attachment(container_id=container_id, ifname=ifname, netns=netns, ip=str(ip),
                         prefix_len=ipam.block_net.prefixlen, gateway=str(ipam.gateway_ip),
                         host_veth=host, mac=mac, host_mac=host_mac, bridge_mac=bridge_mac)
        attachments.save(conf, att)
        _admit(conf, att)
        return att
    except BaseException:
        netops.delete_link(host)
        attachments.path(conf, key).unlink(missing_ok=True)
        st.release(container_id, ifname)
        raise


def _admit(conf: VnetConf, att: Attachment) -> None:
    """The port may send as itself from now on. Under the node lock, after its record is on disk, so a
    rebuild of the guard (from the records) never loses it."""
    with node.node_lock(conf):
        try:
            guard.admit(conf, att)
        except FileNotFoundError:  # the table is gone (a flushed ruleset): rebuilt from the records
            guard.rebuild(conf, attachments.every(conf))


def delete(conf: VnetConf, container_id: str, netns: str | None, ifname: str = "eth0") -> None:
    """Detach and free everything of the attachment; a no-op when nothing is left."""
    key = attachment_key(container_id, ifname)
    att = load_attachment(conf, container_id, ifname)
    if netns and os.path.exists(netns):
        netops.delete_sandbox_link(netns, ifname)
    netops.delete_link(att.host_veth if att else host_veth_name(key))
    if node.has_sandbox_rules(conf, key):
        with node.node_lock(conf):
            node.set_sandbox_rules(conf, key, "", [])
            node.apply_security(conf)
    store(conf).release(container_id, ifname)
    attachments.path(conf, key).unlink(missing_ok=True)  # its guard elements stay, harmless (guard.py)


def check(conf: VnetConf, container_id: str, netns: str, ifname: str = "eth0") -> None:
    """Raise CniFailure unless the attachment is exactly as ADD left it."""
    att = load_attachment(conf, container_id, ifname)
    if att is None:
        raise CniFailure(ERR_UNKNOWN_CONTAINER, f"no attachment {container_id}/{ifname} on network {conf.name}")
    prev = conf.prev_result or {}
    want = f"{att.ip}/{att.prefix_len}"
    if prev and want not in {i.get("address") for i in prev.get("ips", [])}:
        raise CniFailure(ERR_CHECK_FAILED, f"prevResult does not hold {want}")
    if store(conf).lookup(container_id, ifname) != att.ip:
        raise CniFailure(ERR_CHECK_FAILED, f"address {att.ip} is not allocated to {container_id}")
    try:
        have = netops.sandbox_addresses(netns, ifname)
    except FileNotFoundError:
        have = None
    if not have or want not in have:
        raise CniFailure(ERR_CHECK_FAILED, f"{ifname} in {netns} does not carry {want}")
    bridge_idx, _ = node.ensure(conf)
    if netops.host_link_master(att.host_veth) != bridge_idx:
        raise CniFailure(ERR_CHECK_FAILED, f"host veth {att.host_veth} is not on bridge {conf.bridge_name}")


def gc(conf: VnetConf, valid: list[tuple[str, str]], *, grace_s: float = 0.0) -> list[str]:
    """Release every attachment not in ``valid`` ((container id, ifname) pairs); returns freed ips.

    Addresses claimed less than ``grace_s`` ago are kept (an ADD may be in flight).
    """
    keep = {attachment_key(c, i) for c, i in valid}
    known = set(attachments.keys(conf))
    for key in sorted(known - keep):
        f = attachments.path(conf, key)
        try:
            netops.delete_link(Attachment.model_validate_json(f.read_bytes()).host_veth)
        except (FileNotFoundError, ValueError):
            pass
        node.set_sandbox_rules(conf, key, "", [])
        f.unlink(missing_ok=True)
    with node.node_lock(conf):
        if (conf.net_dir / "nsg").is_dir():
            node.apply_security(conf)
        if known:  # the guard forgets the ports of what went, and of earlier DELs
            guard.rebuild(conf, attachments.every(conf))
    return store(conf).gc(keep, grace_s=grace_s, known=known)


def gc_stale(conf: VnetConf, grace_s: float = 60.0) -> list[str]:
    """GC without a list from the runtime: an attachment is valid while its netns exists.

    Claims with no attachment record (a crash between allocation and use) are freed
    once older than ``grace_s``, so an ADD in flight keeps its address.
    """
    valid = [(a.container_id, a.ifname) for a in attachments.every(conf) if os.path.exists(a.netns)]
    return gc(conf, valid, grace_s=grace_s)


def status(conf: VnetConf) -> None:
    """Raise CniFailure(50) when the plugin cannot serve an ADD now (node block full)."""
    used, most = store(conf).usage()
    if used >= most:
        raise CniFailure(ERR_NOT_AVAILABLE, f"network {conf.name}: node block {conf.ipam.node_block} is full "
                         f"({used} of {conf.max_sandboxes} sandboxes)")


def set_security_rules(
    conf: VnetConf, rules: list[SecurityRule], container_id: str | None = None, ifname: str = "eth0"
) -> None:
    """Replace the vnet's rules (``container_id`` None) or one sandbox's, and apply them live."""
    node.ensure(conf)
    with node.node_lock(conf):
        if container_id is None:
            node.set_vnet_rules(conf, rules)
        else:
            att = load_attachment(conf, container_id, ifname)
            if att is None:
                raise CniFailure(ERR_UNKNOWN_CONTAINER, f"no attachment {container_id}/{ifname} on {conf.name}")
            node.set_sandbox_rules(conf, attachment_key(container_id, ifname), att.ip, rules)
        node.apply_security(conf)


def teardown(conf: VnetConf) -> None:
    """Remove the vnet from this node once it has no attachments."""
    if attachments.keys(conf):
        raise CniFailure(ERR_TRY_AGAIN, f"network {conf.name} still has attachments on this node")
    node.teardown(conf)
    shutil.rmtree(conf.net_dir, ignore_errors=True)


def error_doc(exc: BaseException, cni_version: str) -> dict[str, Any]:
    """The spec's error object for an exception."""
    if isinstance(exc, CniFailure):
        code, msg, details = exc.cni_code, exc.message, exc.details
    elif isinstance(exc, CorralError):
        from corral.errors import InvalidRequest, NetworkCapacityExceeded

        code = ERR_CAPACITY if isinstance(exc, NetworkCapacityExceeded) else (
            ERR_INVALID_CONFIG if isinstance(exc, InvalidRequest) else 999)
        msg, details = exc.message, ""
    elif isinstance(exc, ValueError):
        code, msg, details = ERR_INVALID_CONFIG, "invalid network configuration", str(exc)
    elif isinstance(exc, OSError):
        code, msg, details = ERR_IO, str(exc), ""
    else:
        code, msg, details = 999, f"{type(exc).__name__}: {exc}", ""
    doc: dict[str, Any] = {"cniVersion": cni_version, "code": code, "msg": msg}
    if details:
        doc["details"] = details
    return doc


def parse_conf(raw: bytes | str | dict[str, Any]) -> VnetConf:
    doc = raw if isinstance(raw, dict) else json.loads(raw)
    return VnetConf.model_validate(doc)
