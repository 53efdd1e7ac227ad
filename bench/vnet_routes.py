"""What peerings and route tables cost a node, beside the same network without them, in one run.

  (c) corral-vnet in-process ADD/DEL, no peering, no route table (the baseline)
  (e) the same with one peered network and a 4-route table (the routes mirrored into each sandbox)
  (f) applying a change live to a network holding n sandboxes: associating the route table,
      changing one route, removing the peering (node tables, sandbox routes, conntrack cut)

Everything runs inside a throw-away "host" network namespace (``cvn-hb``). Needs root.

    .venv/bin/python bench/vnet_routes.py [-n 30]
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from network import Bench, timed  # noqa: E402  (bench/network.py)

from corral.net.vnet import netops, node, plugin  # noqa: E402
from corral.net.vnet.config import VnetConf  # noqa: E402
from corral.node.network import nsfiles  # noqa: E402

HOST = "cvn-hb"
HOST_PATH = f"/var/run/netns/{HOST}"


def routes(block: str) -> list[dict[str, str]]:
    """A 4-route table whose appliance sits in ``block`` (on the network's own bridge)."""
    appliance = str(ipaddress.ip_network(block).network_address + 4)
    return [
        {"name": "fw", "addressPrefix": "10.229.0.0/16", "nextHopType": "VirtualAppliance",
         "nextHopIpAddress": appliance},
        {"name": "drop", "addressPrefix": "10.230.0.0/16", "nextHopType": "None"},
        {"name": "out", "addressPrefix": "10.231.0.0/16", "nextHopType": "Internet"},
        {"name": "here", "addressPrefix": "10.228.0.0/20", "nextHopType": "VnetLocal"},
    ]


# The peered network's block on another node, reached over a veth standing for the host's fabric.
PEERING = [{"name": "cvn-bench-peer", "addressPrefixes": ["10.227.0.0/16"],
            "peers": [{"block": "10.227.2.0/24", "via": "192.0.2.9"}]}]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30, help="sandboxes per mode")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cvn-bench-routes-"))
    subprocess.run(["ip", "netns", "add", HOST], check=True)
    table = Bench(args.n, tmp, prefix="cvn")  # its sandboxes (cvn-hb-s<i>), rows and table
    changes: list[tuple[str, float]] = []

    def conf(name: str, bridge: str, block: str, **extra: Any) -> VnetConf:
        return VnetConf.model_validate({"name": name, "bridge": bridge, "dataDir": str(tmp / "vnet"),
                                        "ipam": {"subnet": "10.228.0.0/16", "nodeBlock": block}, **extra})

    def live(paths: list[str]) -> None:
        c = conf("cvn-bench-live", "cvnb3", "10.228.3.0/24", peerings=PEERING)
        for i, p in enumerate(paths):
            plugin.add(c, f"l{i}", p, "eth0")
        rt = routes("10.228.3.0/24")
        for label, new in (("(f) associate the 4-route table", {"routes": rt}),
                           ("(f) change one route", {"routes": [*rt[:3], {**rt[3], "nextHopType": "None"}]}),
                           ("(f) remove the peering", {"peerings": []})):
            c = VnetConf.model_validate({**c.model_dump(by_alias=True), **new})
            changes.append((label, timed(partial(node.ensure, c))))
        for i, p in enumerate(paths):
            plugin.delete(c, f"l{i}", p, "eth0")
        plugin.teardown(c)

    def work() -> None:
        paths = [str(nsfiles.netns_path(n)) for n in table.make_netns("s")]  # the same ones for every mode
        try:
            for label, c in (("(c) in-process, no peering, no route table",
                              conf("cvn-bench-plain", "cvnb1", "10.228.1.0/24")),
                             ("(e) in-process, 1 peering, 4 routes",
                              conf("cvn-bench-routes", "cvnb2", "10.228.2.0/24", routes=routes("10.228.2.0/24"),
                                   peerings=PEERING))):
                table.run_inprocess(c, label, paths)
                plugin.teardown(c)
            live(paths)
        finally:
            table.drop_netns()

    try:
        for cmd in (["ip", "link", "set", "lo", "up"], ["ip", "link", "add", "fab", "type", "veth", "peer", "fab1"],
                    ["ip", "addr", "add", "192.0.2.1/24", "dev", "fab"], ["ip", "link", "set", "fab", "up"],
                    ["ip", "link", "set", "fab1", "up"]):
            subprocess.run(["ip", "netns", "exec", HOST, *cmd], check=True)
        netops.in_netns(HOST_PATH, work)
        print(table.table())
        print(f"\n{'live change, network with n sandboxes':<46} {'ms':>9}")
        for label, ms in changes:
            print(f"{label:<46} {ms:9.1f}")
    finally:
        subprocess.run(["ip", "netns", "del", HOST], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
