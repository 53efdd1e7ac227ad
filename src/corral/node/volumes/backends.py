"""Which backend holds a node's azureFile shares: directories on this machine (one node, `corral up`)
or a GlusterFS volume every node of a cluster mounts (docs/shares.md).

The choice is remembered in ``<data dir>/node/shares.json``, so `corral share` on the machine uses
the backend its agent was started with.
"""

from __future__ import annotations

import json
from pathlib import Path

from corral.fileio import atomic_write
from corral.node.volumes.gluster import GlusterMount, GlusterShares, GlusterSource
from corral.node.volumes.shares import ShareStore

LOCAL = "local"


def shares_root(data_dir: Path) -> Path:
    """Where the node keeps its azureFile shares (a GlusterFS volume is mounted there)."""
    return data_dir / "shares"


def _conf(data_dir: Path) -> Path:
    return data_dir / "node" / "shares.json"


def shares_source(data_dir: Path, source: str | None = None) -> str:
    """The node's shares source: ``source`` if given (then remembered), else the one remembered ("local")."""
    conf = _conf(data_dir)
    if source is not None:
        source = source.strip() or LOCAL
        if source != LOCAL:
            source = GlusterSource.parse(source).url()
        conf.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(conf, json.dumps({"source": source}).encode())
        return source
    try:
        return str(json.loads(conf.read_text())["source"])
    except (OSError, ValueError, KeyError):
        return LOCAL


def gluster_mount(data_dir: Path, source: str) -> GlusterMount:
    return GlusterMount(GlusterSource.parse(source), shares_root(data_dir), data_dir / "node")


def share_backend(data_dir: Path, source: str | None = None) -> ShareStore | GlusterShares:
    """The node's shares, on the backend ``source`` names (see ``shares_source``)."""
    source = shares_source(data_dir, source)
    if source == LOCAL:
        return ShareStore(shares_root(data_dir))
    return GlusterShares(gluster_mount(data_dir, source))


def unmount_shares(data_dir: Path) -> None:
    """Unmount the node's GlusterFS volume if it has one (the choice stays remembered)."""
    source = shares_source(data_dir)
    if source != LOCAL:
        gluster_mount(data_dir, source).unmount()
