"""Read-modify-write of one model-typed record with compare-and-swap, retried when a writer races us."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel

from corral.errors import Conflict, CorralError, VersionConflict
from corral.store.base import ABSENT, Store

M = TypeVar("M", bound=BaseModel)


def update_record(
    store: Store,
    key: str,
    model: type[M],
    apply: Callable[[M | None], M],
    *,
    missing: Callable[[], CorralError] | None = None,
    busy: str,
    attempts: int = 10,
) -> tuple[M, int, bool]:
    """Write ``apply(current)`` at ``key``; returns (new value, its version, whether it was created).

    With ``missing`` the key must exist (its error is raised otherwise); without it ``apply`` gets
    None for a new key. ``busy`` is the message when every attempt lost its race.
    """
    for _ in range(attempts):
        rec = store.get(key)
        if rec is None and missing is not None:
            raise missing()
        new = apply(model.model_validate(rec.value) if rec else None)
        try:
            out = store.put(key, new.model_dump(mode="json", exclude_none=True),
                            expect_version=rec.version if rec else ABSENT)
        except VersionConflict:
            continue
        return new, out.version, rec is None
    raise Conflict(busy)
