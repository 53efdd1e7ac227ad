"""What ADD built for one (container, ifname), kept on disk under ``<net_dir>/attachments/<key>.json``.

DEL, CHECK and GC read it back; the node's set-up (routes mirrored into sandboxes, the anti-spoofing
guard) is rebuilt from the whole list.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from corral.fileio import atomic_write
from corral.net.vnet.config import VnetConf
from corral.net.vnet.ipam import attachment_key


class Attachment(BaseModel):
    container_id: str
    ifname: str
    netns: str
    ip: str
    prefix_len: int
    gateway: str
    host_veth: str
    mac: str  # the sandbox end's MAC (the only one its port may send from)
    host_mac: str
    bridge_mac: str


def directory(conf: VnetConf) -> Path:
    return conf.net_dir / "attachments"


def path(conf: VnetConf, key: str) -> Path:
    return directory(conf) / f"{key}.json"


def load(conf: VnetConf, container_id: str, ifname: str) -> Attachment | None:
    try:
        return Attachment.model_validate_json(path(conf, attachment_key(container_id, ifname)).read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def save(conf: VnetConf, att: Attachment) -> None:
    atomic_write(path(conf, attachment_key(att.container_id, att.ifname)), att.model_dump_json(), durable=False)


def keys(conf: VnetConf) -> list[str]:
    """The keys of every record, readable or not."""
    d = directory(conf)
    return sorted(f.stem for f in d.iterdir() if f.suffix == ".json" and not f.name.startswith(".")) \
        if d.is_dir() else []


def every(conf: VnetConf) -> list[Attachment]:
    """Every readable record (one being removed meanwhile is skipped)."""
    out = []
    for key in keys(conf):
        try:
            out.append(Attachment.model_validate_json(path(conf, key).read_bytes()))
        except (FileNotFoundError, ValueError):
            continue
    return out
