"""Image references: parse and normalize `[registry/]repository[:tag][@digest]`.

Follows Docker's normalization so that "busybox", "library/busybox" and
"docker.io/library/busybox:latest" all name the same cached image.
"""

from __future__ import annotations

import re

from pydantic import BaseModel

from corral.errors import InvalidRequest

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
# Aliases Docker clients use for the Hub; all normalize to docker.io.
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}

_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_HOST = re.compile(
    r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)"
    r"(?::[0-9]{1,5})?$"
)


class ImageReference(BaseModel):
    registry: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> ImageReference:
        """Parse a user-supplied reference; raise InvalidRequest naming what is wrong."""
        text = ref.strip() if isinstance(ref, str) else ""
        if not text:
            raise InvalidRequest("image reference is empty", target="image")
        if any(c.isspace() for c in text):
            raise InvalidRequest(f"image reference {ref!r} contains whitespace", target="image")

        digest: str | None = None
        if "@" in text:
            text, digest = text.rsplit("@", 1)
            if not _DIGEST.match(digest):
                raise InvalidRequest(
                    f"image reference {ref!r} has an invalid digest {digest!r}; "
                    "expected sha256: followed by 64 lowercase hex digits",
                    target="image",
                )

        registry = DEFAULT_REGISTRY
        first, sep, rest = text.partition("/")
        # A first component is a registry host only if it looks like one, as in Docker.
        if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            if not _HOST.match(first):
                raise InvalidRequest(f"image reference {ref!r} has an invalid registry host {first!r}",
                                     target="image")
            registry = first
            text = rest

        tag: str | None = None
        last_slash = text.rfind("/")
        colon = text.rfind(":")
        if colon > last_slash:
            text, tag = text[:colon], text[colon + 1:]
            if not _TAG.match(tag):
                raise InvalidRequest(
                    f"image reference {ref!r} has an invalid tag {tag!r}; tags are up to 128 of "
                    "letters, digits, '_', '.', '-', not starting with '.' or '-'",
                    target="image",
                )

        if registry in _HUB_ALIASES:
            registry = DEFAULT_REGISTRY
            if "/" not in text:
                text = f"library/{text}"
        if not text:
            raise InvalidRequest(f"image reference {ref!r} has no repository name", target="image")
        for component in text.split("/"):
            if not _COMPONENT.match(component):
                raise InvalidRequest(
                    f"image reference {ref!r} has an invalid repository name {text!r}; use lowercase "
                    "letters, digits and single separators ('.', '_', '__', '-') between '/'",
                    target="image",
                )
        if len(text) > 255:
            raise InvalidRequest(f"image reference {ref!r}: repository name longer than 255 characters",
                                 target="image")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(registry=registry, repository=text, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """`registry/repository`, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry's manifests endpoint for: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> ImageReference:
        return self.model_copy(update={"digest": digest})

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def normalize(ref: str) -> str:
    """Canonical string form of a reference, the key the store files images under."""
    return str(ImageReference.parse(ref))
