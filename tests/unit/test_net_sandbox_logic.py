"""Pure logic of the node network package: CNI inputs, /etc files, ids, results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corral.errors import InvalidRequest, NetworkError
from corral.node.network import DnsSettings, NetworkConfig, NetworkManager, etcfiles
from corral.node.network.cni import _plugin_input
from corral.node.network.sandbox import _primary_address


def test_plugin_input_passes_only_declared_capabilities() -> None:
    conflist = {"cniVersion": "1.0.0", "name": "n", "plugins": []}
    plugin = {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}
    raw = json.loads(_plugin_input(conflist, plugin, {"ips": []}, {"portMappings": [1], "bandwidth": {}}))
    assert raw == {"type": "portmap", "snat": True, "cniVersion": "1.0.0", "name": "n",
                   "prevResult": {"ips": []}, "runtimeConfig": {"portMappings": [1]}}
    bridge = json.loads(_plugin_input(conflist, {"type": "bridge"}, None, {"portMappings": [1]}))
    assert "runtimeConfig" not in bridge and "prevResult" not in bridge


def test_etc_files(tmp_path: Path) -> None:
    dns = DnsSettings(nameservers=["10.0.0.2"], search=["a.b"], options=["ndots:2"])
    r, h, n = etcfiles.write_all(tmp_path, "10.1.2.3", "web", dns)
    assert r.read_text() == "nameserver 10.0.0.2\nsearch a.b\noptions ndots:2\n"
    assert "10.1.2.3\tweb\n" in h.read_text()
    assert n.read_text() == "web\n"


def test_host_nameservers_skip_loopback(tmp_path: Path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text("nameserver 127.0.0.53\nnameserver 10.9.9.9\n# c\nnameserver bogus\n")
    assert etcfiles.host_nameservers(f) == ["10.9.9.9"]


def test_primary_address() -> None:
    res = {"ips": [{"address": "fd00::2/64"}, {"address": "10.199.0.7/24", "gateway": "10.199.0.1"}]}
    assert _primary_address(res, "x") == ("10.199.0.7", 24, "10.199.0.1")
    with pytest.raises(NetworkError):
        _primary_address({"ips": []}, "x")


def test_gateway_default_and_ids(tmp_path: Path) -> None:
    cfg = NetworkConfig(subnet="10.199.4.0/24", state_dir=tmp_path)
    assert cfg.gateway_ip() == "10.199.4.1"
    mgr = NetworkManager(cfg)
    for bad in ["", "-x", "a/b", "x" * 64]:
        with pytest.raises(InvalidRequest):
            mgr.delete(bad)
    assert mgr.get("nothing") is None and mgr.list() == []
