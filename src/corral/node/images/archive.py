"""Import image tarballs: OCI archives (oci-layout + index.json) and docker-archives (manifest.json)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.errors import ImageError, InvalidRequest
from corral.node.images import mediatypes
from corral.node.images.content import sha256_digest
from corral.node.images.models import Image, parse_json
from corral.node.images.platform import pick_manifest
from corral.node.images.reference import ImageReference

if TYPE_CHECKING:
    from corral.node.images.store import ImageStore

_REF_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


class _Archive:
    def __init__(self, tar: tarfile.TarFile, path: Path) -> None:
        self.tar = tar
        self.path = path
        self.names = {_clean(n): n for n in tar.getnames()}

    def has(self, name: str) -> bool:
        return name in self.names

    def open(self, name: str):  # type: ignore[no-untyped-def]
        member = self.names.get(_clean(name))
        fh = self.tar.extractfile(member) if member else None
        if fh is None:
            raise ImageError(f"archive {self.path} has no file {name!r}")
        return fh

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()

    def blob_name(self, digest: str) -> str:
        algo, _, hexpart = digest.partition(":")
        return f"blobs/{algo}/{hexpart}"


def import_archive(store: ImageStore, path: Path, reference: str | None) -> list[Image]:
    if not path.is_file():
        raise ImageError(f"image archive {path} does not exist")
    try:
        tar = tarfile.open(path, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise ImageError(f"{path} is not a readable tar archive: {exc}") from exc
    with tar:
        archive = _Archive(tar, path)
        if archive.has("index.json") and archive.has("oci-layout"):
            return _import_oci(store, archive, reference)
        if archive.has("manifest.json"):
            return _import_docker(store, archive, reference)
    raise ImageError(f"{path} is neither an OCI archive (oci-layout, index.json) nor a docker-archive "
                     "(manifest.json)")


def _copy_blob(store: ImageStore, archive: _Archive, digest: str) -> None:
    if store.blobs.has(digest):
        return
    with archive.open(archive.blob_name(digest)) as fh:
        store.blobs.put_file(fh, digest)


def _reference_for(reference: str | None, names: list[str], what: str) -> list[str]:
    if reference is not None:
        return [str(ImageReference.parse(reference))]
    refs = []
    for name in names:
        try:
            refs.append(str(ImageReference.parse(name)))
        except InvalidRequest:
            continue
    if not refs:
        raise ImageError(f"{what} does not name the image; pass a reference to import it under")
    return refs


def _import_oci(store: ImageStore, archive: _Archive, reference: str | None) -> list[Image]:
    index = parse_json(archive.read("index.json"), f"index.json of {archive.path}")
    descs: list[dict[str, Any]] = list(index.get("manifests") or [])
    if not descs:
        raise ImageError(f"OCI archive {archive.path} holds no images")
    if reference is not None and len(descs) > 1:
        raise ImageError(f"OCI archive {archive.path} holds {len(descs)} images; import it without a "
                         "reference so each keeps its own name")
    images: list[Image] = []
    for desc in descs:
        annotations = desc.get("annotations") or {}
        names = [annotations[k] for k in _REF_ANNOTATIONS if annotations.get(k)]
        refs = _reference_for(reference, names, f"OCI archive {archive.path}")
        raw = archive.read(archive.blob_name(desc["digest"]))
        media_type = desc.get("mediaType") or parse_json(raw, "manifest").get("mediaType", "")
        if media_type in mediatypes.INDEXES:
            desc = pick_manifest(parse_json(raw, "image index"), f"image index in {archive.path}")
            raw = archive.read(archive.blob_name(desc["digest"]))
            media_type = desc.get("mediaType") or parse_json(raw, "manifest").get("mediaType", "")
        if sha256_digest(raw) != desc["digest"]:
            raise ImageError(f"manifest {desc['digest']} in {archive.path} failed digest verification")
        if media_type not in mediatypes.MANIFESTS:
            raise ImageError(f"manifest type {media_type or 'unknown'} in {archive.path} is not supported")
        manifest = parse_json(raw, "manifest")
        for blob in [manifest["config"], *manifest.get("layers", [])]:
            _copy_blob(store, archive, blob["digest"])
        images.extend(store._register(ref, raw, media_type) for ref in refs)
    return images


def _import_docker(store: ImageStore, archive: _Archive, reference: str | None) -> list[Image]:
    try:
        entries = json.loads(archive.read("manifest.json"))
    except ValueError as exc:
        raise ImageError(f"manifest.json of {archive.path} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"docker-archive {archive.path} holds no images")
    if reference is not None and len(entries) > 1:
        raise ImageError(f"docker-archive {archive.path} holds {len(entries)} images; import it without a "
                         "reference so each keeps its own name")
    images: list[Image] = []
    for entry in entries:
        refs = _reference_for(reference, list(entry.get("RepoTags") or []), f"docker-archive {archive.path}")
        config_raw = archive.read(entry["Config"])
        config_digest = store.blobs.put(config_raw)
        layers = []
        for name in entry.get("Layers") or []:
            with archive.open(name) as fh:
                head = fh.read(2)
            with archive.open(name) as fh:
                digest = store.blobs.put_file(fh)
            media_type = mediatypes.DOCKER_LAYER_GZIP if head == b"\x1f\x8b" else mediatypes.DOCKER_LAYER
            layers.append({"mediaType": media_type, "size": store.blobs.size(digest), "digest": digest})
        # docker-archives carry no registry manifest: write the equivalent Docker v2 one.
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": mediatypes.DOCKER_MANIFEST,
            "config": {"mediaType": mediatypes.DOCKER_CONFIG, "size": len(config_raw),
                       "digest": config_digest},
            "layers": layers,
        }, separators=(",", ":")).encode()
        images.extend(store._register(ref, manifest, mediatypes.DOCKER_MANIFEST) for ref in refs)
    return images
