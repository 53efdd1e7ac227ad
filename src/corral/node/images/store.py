"""The node's image store: content-addressed blobs, layers unpacked once, overlayfs rootfs.

Layout under `root`:
    blobs/sha256/<hex>   manifests, configs and (compressed) layer blobs, verified
    layers/<diffid-hex>/ each layer unpacked alone, whiteouts in overlayfs form
    images.json          canonical reference -> Image (written atomically)
    mounts/<key>.json    which layers each mounted rootfs uses (garbage collection keeps them)
    locks/, tmp/         per-digest flock files; partial downloads and unpacks

Crash safety: blobs and layers appear only by rename after verification, and the
reference table is replaced atomically, so a crash leaves at worst stray files
in tmp/ (cleared by the next garbage collection) and never a half layer.

Registry mirrors: `mirrors` (or CORRAL_REGISTRY_MIRRORS="docker.io=127.0.0.1:5100,...")
sends requests for a registry to another endpoint instead — there is no Docker Hub
on these machines, so short names like "busybox" can be served by a local registry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from corral.errors import ImageError, RegistryAuthError
from corral.fileio import atomic_write_json
from corral.node.images import mediatypes, overlay
from corral.node.images.content import BlobStore, digest_hex, sha256_digest
from corral.node.images.distribution import RegistryClient, match_credential
from corral.node.images.layers import unpack_layer
from corral.node.images.locks import file_lock
from corral.node.images.metadata import RefTable
from corral.node.images.models import (
    Image,
    ImageConfig,
    RegistryCredential,
    parse_created,
    parse_json,
)
from corral.node.images.platform import pick_manifest
from corral.node.images.reference import ImageReference, normalize
from corral.telemetry import IMAGE_PULLS

__all__ = ["Image", "ImageConfig", "ImageStore", "RegistryCredential", "Progress"]

Progress = Callable[[str, int, int], None]
PULL_WORKERS = 3
MIRRORS_ENV = "CORRAL_REGISTRY_MIRRORS"


def _mirrors_from_env() -> dict[str, str]:
    out: dict[str, str] = {}
    for item in os.environ.get(MIRRORS_ENV, "").split(","):
        name, sep, endpoint = item.strip().partition("=")
        if sep and name and endpoint:
            out[name.strip()] = endpoint.strip()
    return out


class ImageStore:
    def __init__(self, root: Path, *, mirrors: Mapping[str, str] | None = None) -> None:
        self.root = Path(root).absolute()
        self.blobs = BlobStore(self.root / "blobs")
        self.layers_dir = self.root / "layers"
        self.tmp = self.root / "tmp"
        self.locks = self.root / "locks"
        self.mounts = self.root / "mounts"
        for d in (self.layers_dir, self.tmp, self.locks, self.mounts):
            d.mkdir(parents=True, exist_ok=True)
        self.refs = RefTable(self.root / "images.json")
        self.mirrors = dict(mirrors) if mirrors is not None else _mirrors_from_env()
        self._gc_lock = self.locks / "gc.lock"

    # --- lookup -----------------------------------------------------------------------------

    def get(self, ref: str) -> Image | None:
        """The cached image for `ref` (normalized), without touching the network."""
        parsed = ImageReference.parse(ref)
        table = self.refs.load()
        found = table.get(str(parsed))
        if found is not None or parsed.digest is None:
            return found
        # A digest-pinned reference matches an image of that repository stored under any tag.
        for image in table.values():
            other = ImageReference.parse(image.reference)
            if other.name == parsed.name and image.digest == parsed.digest:
                return image
        return None

    def list(self) -> list[Image]:
        return list(self.refs.load().values())

    def layer_path(self, diff_id: str) -> Path:
        return self.layers_dir / digest_hex(diff_id)

    # --- pull -------------------------------------------------------------------------------

    def ensure(self, ref: str, credentials: Iterable[RegistryCredential] = ()) -> Image:
        return self.get(ref) or self.pull(ref, credentials)

    def pull(self, ref: str, credentials: Iterable[RegistryCredential] = (),
             progress: Progress | None = None) -> Image:
        start, result = time.perf_counter(), "failure"
        try:
            image = self._pull(ref, credentials, progress)
            result = "success"
            return image
        finally:
            IMAGE_PULLS.labels(result).observe(time.perf_counter() - start)

    def _pull(self, ref: str, credentials: Iterable[RegistryCredential], progress: Progress | None) -> Image:
        parsed = ImageReference.parse(ref)
        cred = match_credential(parsed.registry, tuple(credentials))
        endpoint = self.mirrors.get(parsed.registry)
        with file_lock(self._gc_lock, shared=True), \
                RegistryClient(parsed.registry, cred, endpoint=endpoint) as client:
            try:
                manifest, media_type = self._fetch_manifest(client, parsed)
                self._fetch_blobs(client, parsed.repository, manifest, progress)
            except RegistryAuthError as exc:
                raise RegistryAuthError(f"could not pull {parsed}: {exc.message}", target="image") from exc
            except ImageError as exc:
                raise ImageError(f"image {parsed} is not in the node cache and could not be pulled from "
                                 f"registry {client.where}: {exc.message}", target="image") from exc
            return self._register(str(parsed), manifest, media_type)

    def _fetch_manifest(self, client: RegistryClient, ref: ImageReference) -> tuple[bytes, str]:
        raw, media_type = client.get_manifest(ref.repository, ref.reference)
        if ref.digest is not None and sha256_digest(raw) != ref.digest:
            raise ImageError(f"registry returned a manifest whose digest is {sha256_digest(raw)}, "
                             f"not the requested {ref.digest}")
        doc = parse_json(raw, f"manifest of {ref}")
        media_type = doc.get("mediaType") or media_type
        if media_type in mediatypes.INDEXES or (not media_type and "manifests" in doc):
            desc = pick_manifest(doc, f"image index {ref}")
            raw, media_type = client.get_manifest(ref.repository, desc["digest"])
            if sha256_digest(raw) != desc["digest"]:
                raise ImageError(f"manifest {desc['digest']} of {ref} failed digest verification")
            media_type = parse_json(raw, f"manifest of {ref}").get("mediaType") or media_type
        if media_type not in mediatypes.MANIFESTS:
            raise ImageError(f"manifest type {media_type or 'unknown'} of {ref} is not supported "
                             "(expected an OCI or Docker v2 image manifest)")
        return raw, media_type

    def _fetch_blobs(self, client: RegistryClient, repository: str, manifest_raw: bytes,
                     progress: Progress | None) -> None:
        """Fetch the config, then download and unpack the layers a few at a time."""
        manifest = parse_json(manifest_raw, "manifest")
        config_desc = manifest.get("config") or {}
        self._fetch_blob(client, repository, config_desc, progress)
        config = parse_json(self.blobs.read(config_desc["digest"]), "image config")
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        layers = list(manifest.get("layers") or [])
        if len(diff_ids) != len(layers):
            raise ImageError(f"manifest lists {len(layers)} layers but the config has "
                             f"{len(diff_ids)} diff ids")

        def one(desc: dict[str, object], diff_id: str) -> None:
            if self.layer_path(diff_id).is_dir() and self.blobs.has(str(desc.get("digest", ""))):
                if progress:
                    size = int(str(desc.get("size") or 0))
                    progress(str(desc["digest"]), size, size)
                return
            self._fetch_blob(client, repository, desc, progress)
            self._unpack(str(desc["digest"]), str(desc.get("mediaType", "")), diff_id)

        if len(layers) <= 1:
            for desc, diff_id in zip(layers, diff_ids, strict=True):
                one(desc, diff_id)
            return
        # Downloads overlap with unpacking; the per-digest locks keep concurrent pulls apart.
        with ThreadPoolExecutor(max_workers=PULL_WORKERS, thread_name_prefix="pull") as pool:
            futures = [pool.submit(one, d, i) for d, i in zip(layers, diff_ids, strict=True)]
            for future in futures:
                future.result()

    def _fetch_blob(self, client: RegistryClient, repository: str, desc: dict[str, object],
                    progress: Progress | None) -> None:
        digest, size = str(desc.get("digest", "")), desc.get("size")
        with file_lock(self.locks / f"{digest_hex(digest)}.lock"):
            if self.blobs.has(digest):
                if progress:
                    progress(digest, self.blobs.size(digest), self.blobs.size(digest))
                return
            declared = int(str(size)) if size is not None else None
            with client.open_blob(repository, digest) as (chunks, length):
                total = declared or length or 0

                def tick(done: int) -> None:
                    if progress:
                        progress(digest, done, total)

                self.blobs.put_stream(chunks, digest, tick, expected_size=declared)
            if progress:
                progress(digest, total, total)

    # --- registering images whose blobs are present --------------------------------------------

    def _register(self, reference: str, manifest_raw: bytes, media_type: str) -> Image:
        """Record an image whose manifest, config and layer blobs are in the blob store."""
        manifest = parse_json(manifest_raw, f"manifest of {reference}")
        digest = self.blobs.put(manifest_raw)
        config_desc = manifest.get("config") or {}
        config_digest = config_desc.get("digest", "")
        config = parse_json(self.blobs.read(config_digest), f"config of {reference}")
        if sha256_digest(self.blobs.read(config_digest)) != config_digest:
            raise ImageError(f"config blob of {reference} failed digest verification")
        layer_descs = list(manifest.get("layers") or [])
        diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
        if len(diff_ids) != len(layer_descs):
            raise ImageError(f"image {reference}: manifest lists {len(layer_descs)} layers but the "
                             f"config has {len(diff_ids)} diff ids")
        for desc, diff_id in zip(layer_descs, diff_ids, strict=True):
            self._unpack(desc["digest"], desc.get("mediaType", ""), diff_id)
        image = Image(
            reference=reference,
            digest=digest,
            config=ImageConfig.from_blob(config),
            layers=diff_ids,
            size=sum(int(d.get("size") or 0) for d in layer_descs),
            created=parse_created(config.get("created")),
            media_type=media_type,
            config_digest=config_digest,
            layer_blobs=[d["digest"] for d in layer_descs],
        )

        def put(table: dict[str, Image]) -> None:
            table[reference] = image

        self.refs.update(put)
        return image

    def _unpack(self, blob_digest: str, media_type: str, diff_id: str) -> None:
        dest = self.layer_path(diff_id)
        if dest.is_dir():
            return
        with file_lock(self.locks / f"layer-{digest_hex(diff_id)}.lock"):
            unpack_layer(self.blobs.path(blob_digest), media_type, diff_id, dest, self.tmp)

    def commit(self, reference: str, manifest_raw: bytes, media_type: str) -> Image:
        """Register an image built or imported locally; its blobs must already be in `self.blobs`."""
        with file_lock(self._gc_lock, shared=True):
            return self._register(normalize(reference), manifest_raw, media_type)

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Hold off garbage collection while adding blobs that no image references yet."""
        with file_lock(self._gc_lock, shared=True):
            yield

    def manifest(self, image: Image) -> bytes:
        return self.blobs.read(image.digest)

    # --- archives and push ------------------------------------------------------------------

    def import_archive(self, path: Path, reference: str | None = None) -> list[Image]:
        """Import an OCI archive (oci-layout + index.json) or a docker-archive (manifest.json) tarball."""
        from corral.node.images.archive import import_archive

        with file_lock(self._gc_lock, shared=True):
            return import_archive(self, Path(path), reference)

    def push(self, ref: str, destination: str, credentials: Iterable[RegistryCredential] = ()) -> str:
        """Push a cached image to `destination` (a full reference); returns the manifest digest."""
        image = self.get(ref)
        if image is None:
            raise ImageError(f"image {normalize(ref)} is not in the node cache; pull or build it first",
                             target="image")
        dest = ImageReference.parse(destination)
        if dest.digest is not None and dest.digest != image.digest:
            raise ImageError(f"cannot push {image.reference} as {dest}: its digest is {image.digest}")
        cred = match_credential(dest.registry, tuple(credentials))
        raw = self.manifest(image)
        with RegistryClient(dest.registry, cred, endpoint=self.mirrors.get(dest.registry)) as client:
            for blob in [*image.layer_blobs, image.config_digest]:
                if not client.has_blob(dest.repository, blob):
                    client.upload_blob(dest.repository, blob, self.blobs.path(blob))
            returned = client.put_manifest(dest.repository, dest.tag or image.digest, raw, image.media_type)
        if returned and returned != image.digest:
            raise ImageError(f"registry stored {dest} under digest {returned}, expected {image.digest}")
        return image.digest

    # --- removal and garbage collection ---------------------------------------------------------

    def remove(self, ref: str) -> None:
        """Untag `ref` (no error if absent), then drop blobs and layers nothing else uses."""
        key = normalize(ref)
        with file_lock(self._gc_lock):
            def drop(table: dict[str, Image]) -> None:
                table.pop(key, None)
                if ImageReference.parse(key).digest is not None:
                    found = self.get(key)
                    if found is not None:
                        table.pop(found.reference, None)

            self.refs.update(drop)
            self._collect()

    def gc(self) -> None:
        with file_lock(self._gc_lock):
            self._collect()

    def _collect(self) -> None:
        """Caller holds the exclusive gc lock, so no pull, import or mount is in flight."""
        images = self.refs.load().values()
        live_blobs = {d for img in images for d in (img.digest, img.config_digest, *img.layer_blobs)}
        live_layers = {digest_hex(d) for img in images for d in img.layers}
        for record in self._mount_records():
            live_layers.update(digest_hex(d) for d in record.get("layers", []))
        for digest in self.blobs.digests():
            if digest not in live_blobs:
                self.blobs.remove(digest)
        for layer in self.layers_dir.iterdir():
            if layer.name not in live_layers:
                # Rename first so a crash mid-delete never leaves a half layer that looks complete.
                doomed = self.tmp / f"gc.{layer.name}"
                shutil.rmtree(doomed, ignore_errors=True)
                os.rename(layer, doomed)
                shutil.rmtree(doomed, ignore_errors=True)
        for stray in [*self.tmp.iterdir(), *self.blobs.tmp.iterdir()]:
            if stray.is_dir() and not stray.is_symlink():
                shutil.rmtree(stray, ignore_errors=True)
            else:
                stray.unlink(missing_ok=True)

    # --- rootfs -----------------------------------------------------------------------------

    def _record_path(self, container_dir: Path) -> Path:
        key = hashlib.sha256(str(container_dir).encode()).hexdigest()[:32]
        return self.mounts / f"{key}.json"

    def _mount_records(self) -> list[dict[str, object]]:
        records = []
        for path in self.mounts.glob("*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            # A record whose container dir is gone was left by a crash or a careless delete.
            if not Path(str(record.get("container_dir", ""))).is_dir():
                path.unlink(missing_ok=True)
                continue
            records.append(record)
        return records

    def mount_rootfs(self, image: Image, container_dir: Path) -> Path:
        """Mount the image's layers (overlayfs) at container_dir/merged; idempotent."""
        container_dir = Path(container_dir).absolute()
        merged, upper, work = (container_dir / n for n in ("merged", "upper", "work"))
        with file_lock(self._gc_lock, shared=True):
            lowers = [self.layer_path(d) for d in reversed(image.layers)]
            missing = [p.name for p in lowers if not p.is_dir()]
            if missing:
                raise ImageError(f"image {image.reference} is missing unpacked layers {missing}; "
                                 "pull it again", target="image")
            container_dir.mkdir(parents=True, exist_ok=True)
            # No fsync: the record only has to outlive a crash of this process, like the mount it
            # describes (a power loss takes the mount too).
            atomic_write_json(self._record_path(container_dir),
                              {"container_dir": str(container_dir), "image": image.reference,
                               "layers": image.layers}, durable=False)
            if overlay.is_mountpoint(merged):
                return merged
            if not lowers:  # overlayfs needs at least one lower
                empty = self.root / "empty"
                empty.mkdir(exist_ok=True)
                lowers = [empty]
            for d in (upper, work, merged):
                d.mkdir(exist_ok=True)
            overlay.mount_overlay(lowers, upper, work, merged)
        return merged

    def move_rootfs(self, container_dir: Path, new_dir: Path) -> Path:
        """Move a mounted rootfs's container dir (a warm container's, to the container it became) with its
        record; returns the new merged dir. The mount moves with its parent directory."""
        container_dir, new_dir = Path(container_dir).absolute(), Path(new_dir).absolute()
        old_record = self._record_path(container_dir)
        with file_lock(self._gc_lock, shared=True):
            record = json.loads(old_record.read_text())
            record["container_dir"] = str(new_dir)
            atomic_write_json(self._record_path(new_dir), record, durable=False)
            new_dir.parent.mkdir(parents=True, exist_ok=True)
            os.rename(container_dir, new_dir)
            old_record.unlink(missing_ok=True)
        return new_dir / "merged"

    def unmount_rootfs(self, container_dir: Path) -> None:
        """Unmount container_dir/merged and delete upper/ and work/; idempotent."""
        container_dir = Path(container_dir).absolute()
        merged = container_dir / "merged"
        for _ in range(8):  # a rootfs mounted twice by a racing retry needs two unmounts
            if not overlay.is_mountpoint(merged):
                break
            overlay.unmount(merged)
        for name in ("upper", "work"):
            shutil.rmtree(container_dir / name, ignore_errors=True)
        try:
            merged.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ImageError(f"rootfs {merged} is still in use after unmount: {exc}") from exc
        self._record_path(container_dir).unlink(missing_ok=True)
