"""Resolve a container user ("uid[:gid]" or names) against the image's /etc/passwd and /etc/group."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from corral.errors import InvalidRequest


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    home: str = "/"


def _read_db(rootfs: Path, name: str) -> list[list[str]]:
    # The file comes from an untrusted image: read it as data, never follow it outside rootfs.
    path = rootfs / "etc" / name
    try:
        if path.is_symlink():
            return []
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def resolve_user(rootfs: Path, user: str, uid: int | None = None, gid: int | None = None) -> ResolvedUser:
    """``user`` is "", "uid", "uid:gid", "name" or "name:group"; ``uid``/``gid`` override it."""
    passwd = _read_db(rootfs, "passwd")
    groups = _read_db(rootfs, "group")
    name_part, _, group_part = user.partition(":")
    r_uid, r_gid, home, username = 0, 0, "/", "root"
    if name_part:
        if name_part.isdigit():
            r_uid = int(name_part)
            entry = next((p for p in passwd if len(p) > 3 and p[2] == name_part), None)
        else:
            entry = next((p for p in passwd if p[0] == name_part and len(p) > 3), None)
            if entry is None:
                raise InvalidRequest(f"user {name_part!r} is not in the image's /etc/passwd; use a numeric uid")
            r_uid = int(entry[2])
        if entry is not None:
            r_gid = int(entry[3]) if entry[3].isdigit() else 0
            home = entry[5] if len(entry) > 5 and entry[5] else "/"
            username = entry[0]
        else:
            username = ""
    if group_part:
        if group_part.isdigit():
            r_gid = int(group_part)
        else:
            g = next((g for g in groups if g[0] == group_part and len(g) > 2), None)
            if g is None:
                raise InvalidRequest(f"group {group_part!r} is not in the image's /etc/group; use a numeric gid")
            r_gid = int(g[2])
    if uid is not None:
        r_uid = uid
        if not name_part:
            username = ""
    if gid is not None:
        r_gid = gid
    if not name_part:
        # No name given: the image's entry for the effective uid supplies home and groups.
        entry = next((p for p in passwd if len(p) > 3 and p[2] == str(r_uid)), None)
        username = entry[0] if entry else ""
        home = entry[5] if entry and len(entry) > 5 and entry[5] else "/"
    extra: list[int] = []
    if username:
        for g in groups:
            if len(g) > 3 and username in g[3].split(",") and g[2].isdigit():
                gg = int(g[2])
                if gg != r_gid and gg not in extra:
                    extra.append(gg)
    return ResolvedUser(uid=r_uid, gid=r_gid, additional_gids=extra, home=home)
