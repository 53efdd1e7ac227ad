"""Who may call the kubelet API, decided as the kubelet does (webhook mode).

Authentication: a client certificate signed by the cluster's client CA (the API server presents its
``--kubelet-client-certificate``: user = CN, groups = O), else a bearer token checked with a
TokenReview. Authorisation: a SubjectAccessReview for ``nodes/<subresource>`` of this node, the verb
from the HTTP method, the subresource from the path (``stats``, ``metrics``, ``log``, ``spec``,
``healthz``, else ``proxy``). Answers are cached as kubelet caches them (allowed 5 min, denied 30 s).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from lightkube import AsyncClient
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.models.authorization_v1 import ResourceAttributes, SubjectAccessReviewSpec
from lightkube.resources.authentication_v1 import TokenReview
from lightkube.resources.authorization_v1 import SubjectAccessReview

VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
SUBRESOURCES = {"stats": "stats", "metrics": "metrics", "logs": "log", "spec": "spec", "healthz": "healthz"}
ALLOW_TTL, DENY_TTL = 300.0, 30.0


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Attributes:
    verb: str
    subresource: str


def attributes(method: str, path: str) -> Attributes:
    """The SubjectAccessReview attributes kubelet derives from a request."""
    first = path.strip("/").split("/", 1)[0]
    return Attributes(VERBS.get(method.upper(), "get"), SUBRESOURCES.get(first, "proxy"))


class Unauthenticated(Exception):
    pass


class Forbidden(Exception):
    pass


class Authorizer(Protocol):
    async def authenticate_token(self, token: str) -> User: ...

    async def authorize(self, user: User, attrs: Attributes) -> bool: ...


@dataclass
class KubeAuthorizer:
    """TokenReview and SubjectAccessReview through the API server."""

    kube: AsyncClient
    node: str
    _tokens: dict[str, tuple[float, User | None]] = field(default_factory=dict)
    _decisions: dict[tuple[User, Attributes], tuple[float, bool]] = field(default_factory=dict)

    async def authenticate_token(self, token: str) -> User:
        now = time.monotonic()
        hit = self._tokens.get(token)
        if hit is not None and hit[0] > now:
            if hit[1] is None:
                raise Unauthenticated("the token was rejected by the API server")
            return hit[1]
        review = await self.kube.create(TokenReview(spec=TokenReviewSpec(token=token)))
        st = review.status
        if st is None or not st.authenticated or st.user is None:
            self._tokens[token] = (now + DENY_TTL, None)
            raise Unauthenticated((st.error if st else None) or "the token was rejected by the API server")
        user = User(st.user.username or "", tuple(st.user.groups or ()), st.user.uid or "",
                    tuple(sorted((k, tuple(v)) for k, v in (st.user.extra or {}).items())))
        self._tokens[token] = (now + ALLOW_TTL, user)
        return user

    async def authorize(self, user: User, attrs: Attributes) -> bool:
        now = time.monotonic()
        hit = self._decisions.get((user, attrs))
        if hit is not None and hit[0] > now:
            return hit[1]
        spec = SubjectAccessReviewSpec(
            user=user.name, groups=list(user.groups), uid=user.uid or None,
            extra={k: list(v) for k, v in user.extra} or None,
            resourceAttributes=ResourceAttributes(verb=attrs.verb, resource="nodes", subresource=attrs.subresource,
                                                  name=self.node, version="v1", group=""))
        review = await self.kube.create(SubjectAccessReview(spec=spec))
        allowed = bool(review.status and review.status.allowed)
        self._decisions[(user, attrs)] = (now + (ALLOW_TTL if allowed else DENY_TTL), allowed)
        return allowed


def user_from_certificate(peer: dict[str, object] | None) -> User | None:
    """The user a verified client certificate names (``ssl.SSLSocket.getpeercert()`` form)."""
    if not peer:
        return None
    cn, orgs = "", []
    for rdn in peer.get("subject", ()):  # type: ignore[union-attr]
        for k, v in rdn:
            if k == "commonName":
                cn = v
            elif k == "organizationName":
                orgs.append(v)
    return User(cn, tuple(orgs)) if cn else None
