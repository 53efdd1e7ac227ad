"""Human tables by default, JSON or YAML for scripts."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class Format(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


def emit(data: Any, fmt: Format, table: Table | None) -> None:
    if fmt == Format.json:
        print(json.dumps(data, indent=2))
    elif fmt == Format.yaml:
        print(yaml.safe_dump(data, sort_keys=False), end="")
    elif table is not None:
        console.print(table)


def group_ports(g: dict[str, Any]) -> str:
    ip = g["properties"].get("ipAddress") or {}
    ports = ",".join(
        f"{p.get('publicPort') or p['port']}" + (f"->{p['port']}" if p.get("publicPort") else "")
        for p in ip.get("ports", [])
    )
    addr = ip.get("ip") or ""
    return f"{addr}:{ports}" if addr and ports else addr


def groups_table(groups: list[dict[str, Any]]) -> Table:
    t = Table(show_edge=False)
    for col in ("Name", "ResourceGroup", "Status", "Image", "IP:ports", "CPU/Memory", "OsType", "Location"):
        t.add_column(col)
    for g in groups:
        props = g["properties"]
        rg = g["id"].split("/")[4]
        images = ",".join(c["properties"]["image"] for c in props["containers"])
        cpu = sum(c["properties"]["resources"]["requests"]["cpu"] for c in props["containers"])
        mem = sum(c["properties"]["resources"]["requests"]["memoryInGB"] for c in props["containers"])
        t.add_row(g["name"], rg, props["instanceView"]["state"], images, group_ports(g),
                  f"{cpu:g} core/{mem:g} gb", props.get("osType", "Linux"), g.get("location", ""))
    return t


def containers_table(g: dict[str, Any]) -> Table:
    t = Table(show_edge=False)
    for col in ("Container", "Image", "State", "Restarts", "Exit code", "Detail", "Started"):
        t.add_column(col)
    props = g["properties"]
    for kind, items in (("init:", props.get("initContainers") or []), ("", props["containers"])):
        for c in items:
            iv = c["properties"].get("instanceView") or {}
            cur = iv.get("currentState") or {}
            t.add_row(kind + c["name"], c["properties"]["image"], cur.get("state", ""), str(iv.get("restartCount", 0)),
                      "" if cur.get("exitCode") is None else str(cur["exitCode"]), cur.get("detailStatus", ""),
                      cur.get("startTime") or "")
    return t
