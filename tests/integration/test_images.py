"""Image store against a real docker-registry on loopback, real overlayfs mounts, real skopeo."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # so `tests.registry` imports under pytest

from corral.errors import ImageError, RegistryAuthError  # noqa: E402
from corral.node.images import metadata, overlay  # noqa: E402
from corral.node.images.build import LayerBuilder, build_base_image, build_image  # noqa: E402
from corral.node.images.models import Image, ImageConfig, RegistryCredential  # noqa: E402
from corral.node.images.store import ImageStore  # noqa: E402
from tests.registry import RegistryInfo, run_registry  # noqa: E402

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="overlay mounts and whiteout devices need root"),
]


def _unmount_all_under(path: Path) -> None:
    prefix = os.path.realpath(path) + "/"
    with open("/proc/self/mountinfo") as fh:
        points = [overlay._unescape(line.split(" ", 5)[4]) for line in fh]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        overlay.unmount(Path(point))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryInfo]:
    with run_registry(tmp_path_factory.mktemp("reg")) as reg:
        yield reg


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    try:
        yield ImageStore(tmp_path / "store", mirrors={})
    finally:
        _unmount_all_under(tmp_path)


@pytest.fixture
def base(store: ImageStore) -> Image:
    return build_base_image(store)


def test_build_push_remove_pull_gives_same_digest(store: ImageStore, base: Image,
                                                  registry: RegistryInfo) -> None:
    assert build_base_image(store).digest == base.digest  # deterministic build
    dest = f"{registry.host_port}/corral/busybox:roundtrip"
    assert store.push(base.reference, dest) == base.digest
    store.remove(base.reference)
    assert store.list() == []
    seen: list[tuple[str, int, int]] = []
    pulled = store.pull(dest, progress=lambda *a: seen.append(a))
    assert pulled.digest == base.digest
    assert pulled.layers == base.layers
    assert pulled.config.cmd == ["sh"]
    assert seen and seen[-1][1] == seen[-1][2] > 0
    assert store.get(dest) == pulled
    assert store.get(f"{registry.host_port}/corral/busybox@{base.digest}") == pulled
    assert store.ensure(dest).digest == base.digest


def test_mount_shares_layers_and_writes_go_to_upper(store: ImageStore, base: Image, tmp_path: Path) -> None:
    c1 = store.mount_rootfs(base, tmp_path / "c1")
    assert store.mount_rootfs(base, tmp_path / "c1") == c1  # idempotent
    c2 = store.mount_rootfs(base, tmp_path / "c2")
    layer = store.layer_path(base.layers[0])
    assert (c1 / "bin/busybox").is_file() and os.readlink(c1 / "bin/sh") == "/bin/busybox"
    assert stat.S_IMODE(os.stat(c1 / "tmp").st_mode) == 0o1777
    # No copies: both rootfs show the one unpacked file of the shared lower layer.
    ino = os.stat(layer / "bin/busybox").st_ino
    assert os.stat(c1 / "bin/busybox").st_ino == ino == os.stat(c2 / "bin/busybox").st_ino

    (c1 / "etc/hello").write_text("hi")
    with open(c1 / "etc/passwd", "a") as fh:
        fh.write("app:x:1000:1000::/:/bin/sh\n")
    assert (tmp_path / "c1/upper/etc/hello").read_text() == "hi"
    assert "app:" in (tmp_path / "c1/upper/etc/passwd").read_text()
    assert "app:" not in (layer / "etc/passwd").read_text()
    assert not (c2 / "etc/hello").exists()
    assert "app:" not in (c2 / "etc/passwd").read_text()

    store.unmount_rootfs(tmp_path / "c1")
    store.unmount_rootfs(tmp_path / "c1")  # idempotent
    assert not overlay.is_mountpoint(c1)
    assert not (tmp_path / "c1/upper").exists() and not (tmp_path / "c1/work").exists()
    assert (c2 / "bin/busybox").is_file()
    store.unmount_rootfs(tmp_path / "c2")


def test_whiteouts_survive_push_and_pull(store: ImageStore, base: Image, registry: RegistryInfo,
                                         tmp_path: Path) -> None:
    top = (LayerBuilder()
           .whiteout("etc/group")      # delete a file
           .whiteout("var/www")        # delete a directory
           .opaque("usr/sbin")         # hide everything below, keep only what this layer adds
           .file("usr/sbin/only-me", b"x")
           .file("etc/motd", b"layer two\n"))
    img = build_image(store, "corral/whiteout:1", [top.tar()], ImageConfig(cmd=["sh"]), base=base)
    assert len(img.layers) == 2 and img.layers[0] == base.layers[0]
    dest = f"{registry.host_port}/corral/whiteout:1"
    store.push(img.reference, dest)
    store.remove(img.reference)
    store.remove(base.reference)
    assert not any(store.layers_dir.iterdir())

    pulled = store.pull(dest)
    assert pulled.digest == img.digest
    upper_layer = store.layer_path(pulled.layers[1])
    marker = os.lstat(upper_layer / "etc/group")
    assert stat.S_ISCHR(marker.st_mode) and marker.st_rdev == os.makedev(0, 0)
    assert os.getxattr(upper_layer / "usr/sbin", "trusted.overlay.opaque") == b"y"

    root = store.mount_rootfs(pulled, tmp_path / "w")
    assert not (root / "etc/group").exists()
    assert not (root / "var/www").exists() and (root / "var").is_dir()
    assert (root / "etc/passwd").is_file()
    assert (root / "etc/motd").read_text() == "layer two\n"
    assert sorted(os.listdir(root / "usr/sbin")) == ["only-me"]
    assert (root / "usr/bin/wget").is_symlink()  # untouched directories still come from below
    store.unmount_rootfs(tmp_path / "w")


def test_basic_auth_registry(store: ImageStore, base: Image, tmp_path: Path) -> None:
    with run_registry(tmp_path / "authreg", users={"alice": "s3cret"}) as reg:
        good = [RegistryCredential(server=reg.host_port, username="alice", password="s3cret")]
        bad = [RegistryCredential(server=f"http://{reg.host_port}", username="alice", password="nope")]
        dest = f"{reg.host_port}/private/busybox:1"
        with pytest.raises(RegistryAuthError):
            store.push(base.reference, dest)
        assert store.push(base.reference, dest, good) == base.digest
        store.remove(base.reference)
        with pytest.raises(RegistryAuthError, match="rejected"):
            store.pull(dest, bad)
        with pytest.raises(RegistryAuthError, match="requires a username"):
            store.pull(dest)
        assert store.pull(dest, good).digest == base.digest


def _skopeo(*args: str) -> None:
    subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", *args],
                   check=True, capture_output=True, timeout=120)


def test_import_oci_and_docker_archives(store: ImageStore, base: Image, registry: RegistryInfo,
                                        tmp_path: Path) -> None:
    src = f"{registry.host_port}/corral/busybox:archive"
    store.push(base.reference, src)
    store.remove(base.reference)
    oci_tar, docker_tar = tmp_path / "x-oci.tar", tmp_path / "x-docker.tar"
    _skopeo(f"docker://{src}", f"oci-archive:{oci_tar}")
    _skopeo(f"docker://{src}", f"docker-archive:{docker_tar}:example.test/tools/busybox:7")

    [oci] = store.import_archive(oci_tar, reference="local/busybox:oci")
    assert oci.reference == "docker.io/local/busybox:oci"
    assert oci.layers == base.layers and oci.config.cmd == ["sh"]
    with pytest.raises(ImageError, match="does not name the image"):
        store.import_archive(oci_tar)

    [dock] = store.import_archive(docker_tar)  # named by the archive's RepoTags
    assert dock.reference == "example.test/tools/busybox:7"
    assert dock.layers == base.layers
    assert store.get("example.test/tools/busybox:7") == dock

    root = store.mount_rootfs(dock, tmp_path / "d")
    assert (root / "bin/busybox").is_file()
    store.unmount_rootfs(tmp_path / "d")

    with pytest.raises(ImageError, match="neither an OCI archive"):
        bogus = tmp_path / "bogus.tar"
        subprocess.run(["tar", "-cf", str(bogus), "-C", str(tmp_path), "x-oci.tar"], check=True)
        store.import_archive(bogus)


def test_remove_garbage_collects_but_keeps_shared_and_mounted_layers(store: ImageStore, base: Image,
                                                                      tmp_path: Path) -> None:
    child = build_image(store, "corral/child:1", [LayerBuilder().file("app", b"1").tar()],
                        ImageConfig(cmd=["/app"]), base=base)
    store.remove(base.reference)
    assert store.layer_path(base.layers[0]).is_dir()  # still used by the child
    root = store.mount_rootfs(child, tmp_path / "m")
    store.remove(child.reference)
    assert store.get(child.reference) is None
    assert store.layer_path(child.layers[1]).is_dir()  # mounted: kept
    assert (root / "app").read_bytes() == b"1"
    store.unmount_rootfs(tmp_path / "m")
    store.gc()
    assert not any(store.layers_dir.iterdir())
    assert store.blobs.digests() == []
    store.remove(child.reference)  # removing what is gone is fine


def test_unknown_short_name_reports_cache_miss_and_registry(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a loopback port nobody listens on stands in for Docker Hub
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    store = ImageStore(tmp_path / "store", mirrors={"docker.io": dead})
    with pytest.raises(ImageError) as err:
        store.pull("nosuchimage")
    assert "not in the node cache" in err.value.message
    assert "docker.io" in err.value.message and dead in err.value.message
    assert store.get("nosuchimage") is None


def test_missing_tag_is_a_clear_error(store: ImageStore, registry: RegistryInfo) -> None:
    with pytest.raises(ImageError, match="was not found in registry"):
        store.pull(f"{registry.host_port}/corral/never-pushed:1")


def test_concurrent_pulls_of_one_image(store: ImageStore, base: Image, registry: RegistryInfo,
                                       tmp_path: Path) -> None:
    layers = [LayerBuilder().file(f"layer{i}", bytes([i]) * 100_000).tar() for i in range(2)]
    img = build_image(store, "corral/three-layers:1", layers, ImageConfig(cmd=["sh"]), base=base)
    dest = f"{registry.host_port}/corral/three-layers:concurrent"
    store.push(img.reference, dest)
    store.remove(img.reference)
    store.remove(base.reference)
    results: list[Image] = []
    errors: list[BaseException] = []

    def pull() -> None:
        try:
            results.append(store.pull(dest))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=pull) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {r.digest for r in results} == {img.digest}
    assert sorted(p.name for p in store.layers_dir.iterdir()) == sorted(d.split(":")[1] for d in img.layers)
    assert not any(store.tmp.iterdir())
    root = store.mount_rootfs(results[0], tmp_path / "cc")
    assert (root / "bin/busybox").is_file() and (root / "layer1").stat().st_size == 100_000
    store.unmount_rootfs(tmp_path / "cc")


def test_store_survives_restart_and_stray_temp_files(tmp_path: Path, base: Image, store: ImageStore) -> None:
    # Simulate a crash mid-unpack: a half-written layer directory in tmp/.
    (store.tmp / "layer.crashed").mkdir()
    (store.tmp / "layer.crashed/half").write_bytes(b"x")
    again = ImageStore(tmp_path / "store", mirrors={})
    assert again.get("corral/busybox") == base
    again.gc()
    assert not any(again.tmp.iterdir())
    assert again.layer_path(base.layers[0]).is_dir()
    shutil.rmtree(tmp_path / "store")


def test_a_second_store_sees_what_another_changed(tmp_path: Path, base: Image, store: ImageStore,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # Each store keeps the parsed table while the file is unchanged (every container start looks up
    # its image); a change made through another store, or another process, is seen at the next lookup.
    monkeypatch.setattr(metadata, "_SETTLED_NS", 0)  # cache at once, not only once the file is 2 s old
    reader = ImageStore(tmp_path / "store", mirrors={})
    assert reader.get("corral/busybox") == base
    assert reader.get("corral/busybox") == base  # from the kept table
    build_image(store, "corral/busybox:two", [LayerBuilder().file("two", b"2").tar()], ImageConfig(cmd=["sh"]),
                base=base)
    assert reader.get("corral/busybox:two") is not None
    store.remove("corral/busybox")
    assert reader.get("corral/busybox") is None
    assert [i.reference for i in reader.list()] == ["docker.io/corral/busybox:two"]


def test_bearer_token_registry(store: ImageStore, base: Image, tmp_path: Path) -> None:
    with run_registry(tmp_path / "tokreg", users={"bob": "pw"}, token_auth=True) as reg:
        import httpx

        challenge = httpx.get(f"{reg.url}/v2/").headers["www-authenticate"]
        assert challenge.startswith("Bearer realm=")
        good = [RegistryCredential(server=reg.host_port, username="bob", password="pw")]
        dest = f"{reg.host_port}/team/busybox:tok"
        assert store.push(base.reference, dest, good) == base.digest
        store.remove(base.reference)
        with pytest.raises(RegistryAuthError, match="token service refused anonymous"):
            store.pull(dest)
        bad = [RegistryCredential(server=reg.host_port, username="bob", password="wrong")]
        with pytest.raises(RegistryAuthError, match="refused user 'bob'"):
            store.pull(dest, bad)
        assert store.pull(dest, good).digest == base.digest


def test_pull_through_image_index_picks_this_platform(store: ImageStore, base: Image,
                                                      registry: RegistryInfo) -> None:
    import json

    from corral.node.images import mediatypes
    from corral.node.images.distribution import RegistryClient
    from corral.node.images.platform import host_arch

    repo = "corral/multiarch"
    store.push(base.reference, f"{registry.host_port}/{repo}:single")
    # Another real manifest stands in for a foreign platform's image (the registry checks they exist).
    other = build_image(store, "corral/other:1", [LayerBuilder().file("riscv", b"1").tar()], ImageConfig())
    store.push(other.reference, f"{registry.host_port}/{repo}:other")
    manifest = store.manifest(base)
    index = json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [
        {"mediaType": mediatypes.OCI_MANIFEST, "digest": other.digest, "size": len(store.manifest(other)),
         "platform": {"os": "linux", "architecture": "riscv64"}},
        {"mediaType": mediatypes.OCI_MANIFEST, "digest": base.digest, "size": len(manifest),
         "platform": {"os": "linux", "architecture": host_arch()}},
    ]}).encode()
    with RegistryClient(registry.host_port) as client:
        client.put_manifest(repo, "multi", index, mediatypes.OCI_INDEX)
    store.remove(base.reference)
    store.remove(other.reference)
    pulled = store.pull(f"{registry.host_port}/{repo}:multi")
    assert pulled.digest == base.digest and pulled.layers == base.layers
