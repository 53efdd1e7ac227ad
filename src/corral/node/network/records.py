"""A node's network sandboxes as both backends keep them on disk: one ``state.json`` per sandbox
directory, written (fsynced, then renamed into place) before anything is built, so a crash at any
point leaves a record that ``delete`` or ``recover`` can find."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, Field

from corral.fileio import atomic_write
from corral.node.network import nsfiles
from corral.node.network.claims import PortKey


class PortMapping(BaseModel):
    host_port: int = Field(ge=1, le=65535)
    container_port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"


class Sandbox(BaseModel):
    id: str
    netns: str
    netns_path: str
    uts_path: str
    ipc_path: str
    ip: str
    gateway: str
    prefix_len: int
    port_mappings: list[PortMapping] = Field(default_factory=list)
    resolv_conf: Path
    hosts: Path
    hostname_file: Path


class SandboxRecord(BaseModel):
    """What is on disk for one sandbox; ``status`` is ``creating`` until it is whole."""

    id: str
    status: Literal["creating", "ready"] = "creating"
    netns: str
    hostname: str = ""
    port_mappings: list[PortMapping] = Field(default_factory=list)
    sandbox: Sandbox | None = None


R = TypeVar("R", bound=SandboxRecord)


def load(d: Path, model: type[R]) -> R | None:
    try:
        return model.model_validate_json((d / "state.json").read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError:
        return None  # a torn write cannot happen (rename), but junk must never block a delete


def save(d: Path, rec: SandboxRecord) -> None:
    atomic_write(d / "state.json", rec.model_dump_json())


def finished(d: Path, rec: SandboxRecord | None) -> Sandbox | None:
    """The sandbox of ``rec``, loaded from ``d``, if it is finished: ready, and its own (a record
    under another id is what a hand-over cut short left, e.g. a standby slot renamed to a sandbox)."""
    if rec is None or rec.status != "ready" or rec.id != d.name:
        return None
    return rec.sandbox


def ready(root: Path, model: type[SandboxRecord]) -> list[Sandbox]:
    """The whole sandboxes under ``root``, by id."""
    out = []
    for d in sorted(root.iterdir()) if root.exists() else []:
        sb = finished(d, load(d, model))
        if sb is not None:
            out.append(sb)
    return out


def held_ports(root: Path, model: type[SandboxRecord]) -> list[tuple[str, list[PortKey]]]:
    """Host ports each sandbox under ``root`` holds (for ``HostPortClaims``)."""
    out = []
    for d in root.iterdir() if root.exists() else []:
        rec = load(d, model)
        if rec is not None and rec.port_mappings:
            out.append((d.name, [(p.host_port, p.protocol) for p in rec.port_mappings]))
    return out


def intact(sb: Sandbox) -> bool:
    """Its namespaces are all still pinned."""
    return all(nsfiles.is_pinned(Path(p)) for p in (sb.netns_path, sb.uts_path, sb.ipc_path))
