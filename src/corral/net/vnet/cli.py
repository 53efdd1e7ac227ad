"""The ``corral-vnet`` executable: CNI_* environment + JSON config on stdin, per the CNI spec.

Prints the result (ADD), the version document (VERSION) or nothing (DEL, CHECK,
GC, STATUS) on stdout and exits 0; on failure prints the spec's error object
(``code``, ``msg``, ``details``) on stdout and exits 1.

The node's network service (``service.py``) does the work when one runs
(``client.forward``); otherwise this process does it (``respond``). Only ``os``,
``sys`` and the client are imported up front: everything else is the slow path's.
"""

from __future__ import annotations

import os
import sys

from corral.net.vnet import client

TYPE_CHECKING = False  # not typing's: importing typing costs ~7 ms (it pulls in re)
if TYPE_CHECKING:
    from typing import Any


_executable = False  # this process is the short-lived executable doing the work itself


def _fast_pyroute2() -> None:
    """Skip pyroute2's package __init__ (it loads NDB, IPDB, conntrack: ~100 ms) in this process.

    Only the short-lived executable does this; the submodules we use import fine
    without it. Any surprise falls back to the normal import.
    """
    if "pyroute2" in sys.modules or not _executable:
        return
    import importlib.util
    import types

    try:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or not spec.submodule_search_locations:
            return
        stub = types.ModuleType("pyroute2")
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules["pyroute2"] = stub
        import pyroute2.iproute.linux  # noqa: F401
    except Exception:
        sys.modules.pop("pyroute2", None)


def _plugin() -> Any:
    _fast_pyroute2()
    from corral.net.vnet import plugin as p

    return p


def _need(env: dict[str, str], *names: str) -> None:
    missing = [n for n in names if not env.get(n)]
    if missing:
        plugin = _plugin()
        raise plugin.CniFailure(plugin.ERR_INVALID_ENV, f"missing environment variables: {', '.join(missing)}")


def run(command: str, stdin: bytes, env: dict[str, str]) -> dict[str, Any] | None:
    """One CNI invocation; returns the document to print (None for none)."""
    import json

    from corral.net.vnet.version import SUPPORTED_VERSIONS

    plugin = None if command == "VERSION" else _plugin()
    try:
        raw: dict[str, Any] = json.loads(stdin or b"{}")
    except ValueError as exc:
        plugin = _plugin()
        raise plugin.CniFailure(plugin.ERR_DECODE, "cannot decode the network configuration", str(exc)) from exc
    version = str(raw.get("cniVersion", "1.0.0"))
    if command == "VERSION":
        return {"cniVersion": version if version in SUPPORTED_VERSIONS else SUPPORTED_VERSIONS[-1],
                "supportedVersions": SUPPORTED_VERSIONS}
    assert plugin is not None
    if version not in SUPPORTED_VERSIONS:
        raise plugin.CniFailure(plugin.ERR_INCOMPATIBLE_VERSION, f"cniVersion {version} is not supported",
                                f"supported: {', '.join(SUPPORTED_VERSIONS)}")
    conf = plugin.parse_conf(raw)
    cid, netns, ifname = env.get("CNI_CONTAINERID", ""), env.get("CNI_NETNS", ""), env.get("CNI_IFNAME", "")
    if command == "ADD":
        _need(env, "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
        att = plugin.add(conf, cid, netns, ifname)
        return plugin.result(conf, att, raw.get("dns"))
    if command == "DEL":
        _need(env, "CNI_CONTAINERID", "CNI_IFNAME")
        plugin.delete(conf, cid, netns or None, ifname)
        return None
    if command == "CHECK":
        _need(env, "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME")
        plugin.check(conf, cid, netns, ifname)
        return None
    if command == "GC":
        valid = [(a["containerID"], a["ifname"]) for a in (conf.valid_attachments or [])]
        plugin.gc(conf, valid)
        return None
    if command == "STATUS":
        plugin.status(conf)
        return None
    raise plugin.CniFailure(plugin.ERR_INVALID_ENV, f"unknown CNI_COMMAND {command!r}")


def respond(env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    """One CNI call end to end: (exit status, what to print). The network service answers with it too."""
    import json

    from corral.net.vnet.version import SUPPORTED_VERSIONS

    try:
        version = str(json.loads(stdin or b"{}").get("cniVersion", SUPPORTED_VERSIONS[-1]))
    except (ValueError, AttributeError):
        version = SUPPORTED_VERSIONS[-1]
    try:
        doc = run(env.get("CNI_COMMAND", ""), stdin, env)
    except BaseException as exc:  # every failure becomes the spec's error object
        return 1, (json.dumps(_plugin().error_doc(exc, version)) + "\n").encode()
    return 0, (json.dumps(doc) + "\n").encode() if doc is not None else b""


def main() -> int:
    stdin = sys.stdin.buffer.read()
    answer = client.forward(os.environ, stdin)
    if answer is None:  # no service for us: do the work in this process
        if sys.flags.no_site:  # the -S launcher (install.py): the slow path needs site-packages
            import site

            site.main()
        global _executable
        _executable = True
        answer = respond(dict(os.environ), stdin)
    rc, out = answer
    if out:
        sys.stdout.buffer.write(out)
        sys.stdout.flush()
    return rc


def entry() -> None:
    """Console-script entry point (``corral-vnet``)."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
