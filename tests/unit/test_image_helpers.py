"""Pure helpers of the image store: layer building, registry choice, platform pick, config parsing."""

from __future__ import annotations

import io
import tarfile

import pytest

from corral.errors import ImageError
from corral.node.images import distribution, mediatypes
from corral.node.images.build import FIXED_MTIME, LayerBuilder
from corral.node.images.content import digest_hex, sha256_digest
from corral.node.images.models import ImageConfig, RegistryCredential, parse_created
from corral.node.images.platform import host_arch, pick_manifest


def test_layer_builder_is_deterministic_and_writes_whiteouts() -> None:
    def make() -> bytes:
        return LayerBuilder().file("etc/motd", b"hi").whiteout("etc/group").opaque("usr/sbin").tar()

    first = make()
    assert first == make()
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert set(members) == {"etc", "etc/motd", "etc/.wh.group", "usr", "usr/sbin", "usr/sbin/.wh..wh..opq"}
    assert all(m.mtime == FIXED_MTIME and m.uid == 0 and m.gid == 0 for m in members.values())
    assert LayerBuilder().whiteout("top").tar() != first


def test_layer_builder_keeps_special_modes() -> None:
    data = LayerBuilder().dir("tmp", 0o1777).file("bin/su", b"x", 0o4755).tar()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getmember("tmp").mode == 0o1777
        assert tar.getmember("bin/su").mode == 0o4755


def test_digest_helpers() -> None:
    d = sha256_digest(b"")
    assert d == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert digest_hex(d) == d[7:]
    for bad in ("md5:abc", "sha256:xyz", "sha256:" + "A" * 64, "sha256:../../etc"):
        with pytest.raises(ImageError):
            digest_hex(bad)


def test_insecure_only_for_loopback_and_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(distribution.INSECURE_ENV, raising=False)
    assert distribution.is_insecure("localhost:5000")
    assert distribution.is_insecure("127.0.0.1:5100")
    assert distribution.is_insecure("127.9.9.9")
    assert distribution.is_insecure("[::1]:5000")
    assert not distribution.is_insecure("myreg.azurecr.io")
    assert not distribution.is_insecure("10.0.0.5:5000")
    monkeypatch.setenv(distribution.INSECURE_ENV, "10.0.0.5:5000, reg.lan")
    assert distribution.is_insecure("10.0.0.5:5000")
    assert distribution.is_insecure("reg.lan:443")
    assert not distribution.is_insecure("10.0.0.5:6000")


def test_credentials_match_by_normalized_server() -> None:
    creds = [
        RegistryCredential(server="https://myreg.azurecr.io/", username="a", password="1"),
        RegistryCredential(server="index.docker.io", username="b", password="2"),
        RegistryCredential(server="127.0.0.1:5100", username="c", password="3"),
    ]
    assert distribution.match_credential("myreg.azurecr.io", creds) is creds[0]
    assert distribution.match_credential("docker.io", creds) is creds[1]
    assert distribution.match_credential("127.0.0.1:5100", creds) is creds[2]
    assert distribution.match_credential("127.0.0.1:5101", creds) is None


def test_pick_manifest_chooses_linux_host_arch() -> None:
    arch = host_arch()
    index = {"manifests": [
        {"digest": "sha256:1", "platform": {"os": "windows", "architecture": arch}},
        {"digest": "sha256:2", "platform": {"os": "linux", "architecture": "s390x"}},
        {"digest": "sha256:3", "platform": {"os": "linux", "architecture": arch}},
    ]}
    assert pick_manifest(index, "x")["digest"] == "sha256:3"
    if arch != "s390x":
        with pytest.raises(ImageError, match="offers: windows/.*, linux/s390x"):
            pick_manifest({"manifests": index["manifests"][:2]}, "x")


def test_image_config_from_blob_round_trip() -> None:
    blob = {"config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=1"], "WorkingDir": "/srv",
                       "User": "1000:1000", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}}}
    cfg = ImageConfig.from_blob(blob)
    assert cfg.entrypoint == ["/bin/app"] and cfg.cmd == ["--serve"] and cfg.user == "1000:1000"
    assert cfg.exposed_ports == ["53/udp", "8080/tcp"]
    assert ImageConfig.from_blob({"config": cfg.to_blob_config()}) == cfg
    assert ImageConfig.from_blob({}) == ImageConfig()
    assert ImageConfig.from_blob({"config": {"Cmd": None, "Env": None}}) == ImageConfig()


def test_parse_created_handles_go_timestamps() -> None:
    ts = parse_created("2024-05-01T10:20:30.123456789Z")
    assert ts is not None and ts.microsecond == 123456 and ts.utcoffset() is not None
    assert parse_created("2024-05-01T10:20:30Z") is not None
    assert parse_created(None) is None and parse_created("garbage") is None


def test_compression_of_media_types() -> None:
    assert mediatypes.compression_of(mediatypes.OCI_LAYER_GZIP) == "gzip"
    assert mediatypes.compression_of(mediatypes.DOCKER_LAYER_GZIP) == "gzip"
    assert mediatypes.compression_of(mediatypes.OCI_LAYER_ZSTD) == "zstd"
    assert mediatypes.compression_of(mediatypes.OCI_LAYER) == ""
    assert mediatypes.compression_of("application/octet-stream") == "auto"
