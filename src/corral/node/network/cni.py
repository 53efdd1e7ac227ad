"""Run CNI plugin executables per the CNI 1.0 spec (a conflist, ADD in order, DEL reversed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from corral.errors import NetworkError

_ENV_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class CniPluginError(NetworkError):
    """A CNI plugin answered with an error (the spec's code/msg/details)."""

    def __init__(self, plugin: str, command: str, cni_code: int, msg: str, details: str = "") -> None:
        text = f"CNI plugin {plugin!r} {command} failed (code {cni_code}): {msg}"
        if details:
            text += f" ({details})"
        super().__init__(text, target=plugin)
        self.cni_code = cni_code


def _plugin_input(
    conflist: dict[str, Any], plugin: dict[str, Any], prev: dict[str, Any] | None, runtime: dict[str, Any]
) -> bytes:
    conf = dict(plugin)
    conf["cniVersion"] = conflist["cniVersion"]
    conf["name"] = conflist["name"]
    if prev is not None:
        conf["prevResult"] = prev
    # Only hand a plugin the runtime config it declared a capability for.
    caps = {k for k, on in plugin.get("capabilities", {}).items() if on}
    rc = {k: v for k, v in runtime.items() if k in caps}
    if rc:
        conf["runtimeConfig"] = rc
    conf.pop("capabilities", None)
    return json.dumps(conf).encode()


def invoke(
    bin_dir: Path,
    command: str,
    conflist: dict[str, Any],
    plugin: dict[str, Any],
    *,
    container_id: str,
    netns: str,
    ifname: str,
    prev: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Run one plugin; returns its parsed result (None when it printed nothing)."""
    ptype = plugin["type"]
    exe = bin_dir / ptype
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(bin_dir),
        "PATH": os.environ.get("PATH", _ENV_PATH),
    }
    try:
        proc = subprocess.run(
            [str(exe)],
            input=_plugin_input(conflist, plugin, prev, runtime or {}),
            env=env,
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise NetworkError(f"CNI plugin {ptype!r} not found in {bin_dir}", target=ptype) from exc
    out = proc.stdout.strip()
    if proc.returncode != 0:
        try:
            err = json.loads(out)
            code, msg, details = int(err.get("code", 999)), err.get("msg", ""), err.get("details", "")
        except (ValueError, AttributeError):
            code, msg, details = 999, (out or proc.stderr).decode(errors="replace"), ""
        raise CniPluginError(ptype, command, code, msg, details)
    return json.loads(out) if out else None


def add(
    bin_dir: Path, conflist: dict[str, Any], *, container_id: str, netns: str, ifname: str,
    runtime: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """ADD through every plugin in order; each gets the previous result. Returns the final result."""
    prev: dict[str, Any] | None = None
    for plugin in conflist["plugins"]:
        res = invoke(bin_dir, "ADD", conflist, plugin, container_id=container_id, netns=netns,
                     ifname=ifname, prev=prev, runtime=runtime)
        if res is not None:
            prev = res
    return prev or {}


def delete(
    bin_dir: Path, conflist: dict[str, Any], *, container_id: str, netns: str, ifname: str,
    prev: dict[str, Any] | None, runtime: dict[str, Any] | None = None,
) -> None:
    """DEL through every plugin in reverse with the cached ADD result; tries all, raises the first error."""
    first: BaseException | None = None
    for plugin in reversed(conflist["plugins"]):
        try:
            invoke(bin_dir, "DEL", conflist, plugin, container_id=container_id, netns=netns,
                   ifname=ifname, prev=prev, runtime=runtime)
        except NetworkError as exc:
            first = first or exc
    if first is not None:
        raise first
