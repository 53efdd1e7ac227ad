"""unpack_layer on real tars: hardlinks, special modes, devices, whiteouts, unsafe entries."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from corral.errors import ImageError
from corral.node.images import mediatypes
from corral.node.images.content import sha256_digest
from corral.node.images.layers import unpack_layer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="device nodes, chown and trusted xattrs need root"),
]


def _tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _entry(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **kw: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def _unpack(tmp_path: Path, data: bytes, gz: bool = True) -> Path:
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(data) if gz else data)
    dest = tmp_path / "layer"
    media = mediatypes.OCI_LAYER_GZIP if gz else mediatypes.OCI_LAYER
    assert unpack_layer(blob, media, sha256_digest(data), dest, tmp_path / "tmp") == sha256_digest(data)
    return dest


def test_hardlinks_modes_owners_devices_and_xattrs(tmp_path: Path) -> None:
    xattr = _entry("bin/ping", mode=0o755)
    xattr.pax_headers = {"SCHILY.xattr.user.corral": "yes"}
    data = _tar(
        (_entry("bin", tarfile.DIRTYPE, 0o755), None),
        (_entry("bin/busybox", mode=0o4755, uid=0, gid=0), b"ELF"),
        (_entry("bin/sh", tarfile.LNKTYPE, 0o4755, linkname="bin/busybox"), None),
        (_entry("bin/ls", tarfile.SYMTYPE, 0o777, linkname="/bin/busybox"), None),
        (xattr, b"ping"),
        (_entry("tmp", tarfile.DIRTYPE, 0o1777), None),
        (_entry("home/app/.profile", mode=0o600, uid=1000, gid=1001), b"x"),
        (_entry("dev/null", tarfile.CHRTYPE, 0o666, devmajor=1, devminor=3), None),
    )
    root = _unpack(tmp_path, data)
    assert os.stat(root / "bin/sh").st_ino == os.stat(root / "bin/busybox").st_ino
    assert stat.S_IMODE(os.stat(root / "bin/busybox").st_mode) == 0o4755
    assert os.readlink(root / "bin/ls") == "/bin/busybox"
    assert stat.S_IMODE(os.stat(root / "tmp").st_mode) == 0o1777
    st = os.stat(root / "home/app/.profile")
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    dev = os.lstat(root / "dev/null")
    assert stat.S_ISCHR(dev.st_mode) and dev.st_rdev == os.makedev(1, 3)
    assert os.getxattr(root / "bin/ping", "user.corral") == b"yes"
    assert not any((tmp_path / "tmp").iterdir())  # the work dir was renamed away


def test_whiteout_without_parent_entry_and_uncompressed(tmp_path: Path) -> None:
    data = _tar((_entry("a/b/.wh.gone", mode=0o600), b""), (_entry("c/.wh..wh..opq", mode=0o600), b""))
    root = _unpack(tmp_path, data, gz=False)
    assert stat.S_ISCHR(os.lstat(root / "a/b/gone").st_mode)
    assert not (root / "a/b/.wh.gone").exists()
    assert os.getxattr(root / "c", "trusted.overlay.opaque") == b"y"


@pytest.mark.parametrize(
    "members",
    [
        [(_entry("../escape"), b"x")],
        [(_entry("etc", tarfile.SYMTYPE, 0o777, linkname="/etc"), None), (_entry("etc/owned"), b"x")],
        [(_entry("up", tarfile.SYMTYPE, 0o777, linkname="../.."), None), (_entry("up/owned"), b"x")],
    ],
)
def test_unsafe_entries_are_refused_and_leave_nothing(tmp_path: Path,
                                                      members: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(_tar(*members))
    with pytest.raises(ImageError, match="unsafe entry"):
        unpack_layer(blob, mediatypes.OCI_LAYER, None, tmp_path / "layer", tmp_path / "tmp")
    assert not (tmp_path / "layer").exists() and not any((tmp_path / "tmp").iterdir())
    assert not Path("/etc/owned").exists()


def test_diff_id_mismatch_and_corrupt_blob(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(gzip.compress(_tar((_entry("f"), b"1"))))
    with pytest.raises(ImageError, match="diff id mismatch"):
        unpack_layer(blob, mediatypes.OCI_LAYER_GZIP, "sha256:" + "0" * 64, tmp_path / "l", tmp_path / "tmp")
    blob.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ImageError, match="could not be unpacked"):
        unpack_layer(blob, mediatypes.DOCKER_LAYER_GZIP, None, tmp_path / "l", tmp_path / "tmp")
    assert not (tmp_path / "l").exists()
