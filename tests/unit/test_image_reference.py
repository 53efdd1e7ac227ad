"""ImageReference parsing and normalization (Docker rules)."""

from __future__ import annotations

import pytest

from corral.errors import InvalidRequest
from corral.node.images.reference import ImageReference, normalize

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("ref", "registry", "repository", "tag", "digest", "canonical"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None, "docker.io/library/busybox:latest"),
        ("library/busybox:1.36", "docker.io", "library/busybox", "1.36", None,
         "docker.io/library/busybox:1.36"),
        ("index.docker.io/user/app", "docker.io", "user/app", "latest", None, "docker.io/user/app:latest"),
        ("localhost:5000/app:1", "localhost:5000", "app", "1", None, "localhost:5000/app:1"),
        ("localhost/app", "localhost", "app", "latest", None, "localhost/app:latest"),
        ("127.0.0.1:5100/a/b/c:v1.0-rc_1", "127.0.0.1:5100", "a/b/c", "v1.0-rc_1", None,
         "127.0.0.1:5100/a/b/c:v1.0-rc_1"),
        ("myreg.azurecr.io/team/web@" + D, "myreg.azurecr.io", "team/web", None, D,
         "myreg.azurecr.io/team/web@" + D),
        ("myreg.azurecr.io/team/web:2@" + D, "myreg.azurecr.io", "team/web", "2", D,
         "myreg.azurecr.io/team/web:2@" + D),
        ("[::1]:5000/x", "[::1]:5000", "x", "latest", None, "[::1]:5000/x:latest"),
        ("my_org/my-app__x", "docker.io", "my_org/my-app__x", "latest", None,
         "docker.io/my_org/my-app__x:latest"),
    ],
)
def test_parse(ref: str, registry: str, repository: str, tag: str | None, digest: str | None,
               canonical: str) -> None:
    parsed = ImageReference.parse(ref)
    got = (parsed.registry, parsed.repository, parsed.tag, parsed.digest)
    assert got == (registry, repository, tag, digest)
    assert str(parsed) == canonical
    assert normalize(canonical) == canonical  # canonical form is a fixed point


@pytest.mark.parametrize(
    "ref",
    ["", "   ", "Busybox", "busybox:", "busybox:-bad", "a//b", "app@sha256:123", "app@md5:" + "a" * 32,
     "bad host!/x", "x/", "/x", "has space", "reg.io/", "a" * 256],
)
def test_garbage_is_invalid_request(ref: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        ImageReference.parse(ref)
    assert err.value.target == "image"
    assert err.value.message


def test_reference_for_manifest_request() -> None:
    assert ImageReference.parse("busybox").reference == "latest"
    assert ImageReference.parse("busybox:1@" + D).reference == D
    assert ImageReference.parse("reg.io/x:1").name == "reg.io/x"
