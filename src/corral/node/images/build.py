"""Build images locally: the busybox base image and simple images from tar layers.

Layers are deterministic (fixed mtimes, root ownership, sorted entries, gzip
without a timestamp), so the same inputs always give the same digests.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

from corral.errors import ImageError
from corral.node.images import mediatypes
from corral.node.images.content import sha256_digest
from corral.node.images.models import Image, ImageConfig, parse_json
from corral.node.images.platform import host_arch
from corral.node.images.store import ImageStore

FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z: any constant keeps digests stable
BUSYBOX = Path("/bin/busybox")
BASE_PATH_ENV = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

_INDEX_HTML = b"""<!doctype html>
<html><head><title>Corral</title></head>
<body><h1>Hello from Corral</h1><p>This page is served by busybox httpd in a container group.</p></body>
</html>
"""
_PASSWD = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
_GROUP = b"root:x:0:\nnobody:x:65534:\n"


class LayerBuilder:
    """Collects entries of one layer tar; `whiteout`/`opaque` write OCI whiteout markers."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def _info(self, path: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(path.strip("/"))
        info.type = kind
        info.mode = mode
        info.mtime = FIXED_MTIME
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    def _parents(self, path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self._entries:
                self.dir(parent)

    def dir(self, path: str, mode: int = 0o755) -> LayerBuilder:
        self._parents(path)
        self._entries[path.strip("/")] = (self._info(path, tarfile.DIRTYPE, mode), None)
        return self

    def file(self, path: str, data: bytes, mode: int = 0o644) -> LayerBuilder:
        self._parents(path)
        info = self._info(path, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._entries[path.strip("/")] = (info, data)
        return self

    def symlink(self, path: str, target: str) -> LayerBuilder:
        self._parents(path)
        info = self._info(path, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._entries[path.strip("/")] = (info, None)
        return self

    def whiteout(self, path: str) -> LayerBuilder:
        """Delete `path` (file or directory) from the layers below."""
        parent, _, name = path.strip("/").rpartition("/")
        return self.file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", b"", 0o600)

    def opaque(self, path: str) -> LayerBuilder:
        """Hide everything the layers below have inside directory `path`."""
        self.dir(path)
        return self.file(f"{path.strip('/')}/.wh..wh..opq", b"", 0o600)

    def tar(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self._entries):
                info, data = self._entries[name]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()


def build_image(store: ImageStore, reference: str, layers: list[bytes], config: ImageConfig,
                base: Image | None = None) -> Image:
    """Make an image from uncompressed layer tars (bottom to top), optionally on top of `base`."""
    with store.pinned():
        layer_descs: list[dict[str, object]] = []
        diff_ids: list[str] = []
        if base is not None:
            base_manifest = parse_json(store.manifest(base), f"manifest of {base.reference}")
            layer_descs.extend(base_manifest.get("layers") or [])
            diff_ids.extend(base.layers)
        for tar_bytes in layers:
            compressed = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
            blob = store.blobs.put(compressed)
            layer_descs.append({"mediaType": mediatypes.OCI_LAYER_GZIP, "digest": blob,
                                "size": len(compressed)})
            diff_ids.append(sha256_digest(tar_bytes))
        config_blob = _dumps({
            "architecture": host_arch(),
            "os": "linux",
            "config": config.to_blob_config(),
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        config_digest = store.blobs.put(config_blob)
        manifest = _dumps({
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": mediatypes.OCI_CONFIG, "digest": config_digest, "size": len(config_blob)},
            "layers": layer_descs,
        })
        return store.commit(reference, manifest, mediatypes.OCI_MANIFEST)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def busybox_layer(busybox: Path = BUSYBOX) -> bytes:
    """A root filesystem layer: busybox-static, every applet as a symlink, passwd/group, /tmp 1777."""
    try:
        data = busybox.read_bytes()
        applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                                 check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ImageError(f"cannot build the base image: {busybox} is not usable ({exc}); "
                         "install busybox-static") from exc
    layer = LayerBuilder()
    for d in ("bin", "dev", "etc", "home", "proc", "sbin", "sys", "usr/bin", "usr/sbin", "var/www", "run"):
        layer.dir(d)
    layer.dir("root", 0o700).dir("tmp", 0o1777)
    layer.file("bin/busybox", data, 0o755)
    for applet in applets:
        if applet.strip("/") != "bin/busybox":
            layer.symlink(applet, "/bin/busybox")
    layer.file("etc/passwd", _PASSWD).file("etc/group", _GROUP)
    layer.file("var/www/index.html", _INDEX_HTML)
    return layer.tar()


def build_base_image(store: ImageStore, reference: str = "corral/busybox:latest") -> Image:
    """Single-layer busybox image (Cmd ["sh"]) for tests and demos; same digest every time."""
    config = ImageConfig(cmd=["sh"], env=[BASE_PATH_ENV])
    return build_image(store, reference, [busybox_layer()], config)
