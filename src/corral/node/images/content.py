"""Content-addressed blob storage (blobs/sha256/<hex>) with verified, atomic writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO

from corral.errors import ImageError
from corral.fileio import atomic_write

CHUNK = 1 << 20


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_hex(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ImageError(f"unsupported or malformed digest {digest!r}; only sha256 digests are supported")
    return hexpart


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.dir = root / "sha256"
        self.tmp = root / "tmp"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.dir / digest_hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"blob {digest} is missing from the node's image store") from None

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def put(self, data: bytes, expected: str | None = None) -> str:
        digest = sha256_digest(data)
        if expected is not None and expected != digest:
            raise ImageError(f"content digest mismatch: expected {expected}, got {digest}")
        if not self.has(digest):
            atomic_write(self.path(digest), data)
        return digest

    def put_stream(
        self,
        chunks: Iterable[bytes],
        expected: str | None,
        progress: Callable[[int], None] | None = None,
        expected_size: int | None = None,
    ) -> str:
        """Stream chunks to a temp file, verify sha256 (and size), then rename into place."""
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="blob.")
        hasher = hashlib.sha256()
        done = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    hasher.update(chunk)
                    fh.write(chunk)
                    done += len(chunk)
                    if expected_size is not None and done > expected_size:
                        raise ImageError(f"blob {expected} is larger than the {expected_size} bytes declared")
                    if progress is not None:
                        progress(done)
                fh.flush()
                os.fsync(fh.fileno())
            digest = "sha256:" + hasher.hexdigest()
            if expected is not None and digest != expected:
                raise ImageError(f"blob digest mismatch: expected {expected}, downloaded content is {digest}")
            if expected_size is not None and done != expected_size:
                raise ImageError(f"blob {digest} is {done} bytes, the manifest says {expected_size}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(digest))
            return digest
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_file(self, src: IO[bytes], expected: str | None = None) -> str:
        return self.put_stream(iter(lambda: src.read(CHUNK), b""), expected)

    def digests(self) -> list[str]:
        return ["sha256:" + p.name for p in self.dir.iterdir() if len(p.name) == 64]

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
