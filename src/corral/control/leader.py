"""Which control-plane server runs the controllers.

Every server serves the API; the controllers (binder, node lifecycle, metering, network
control) run on one leader at a time. ``Leadership`` is that choice: a server starts its
controllers when elected and stops them when it loses the office. ``SoleLeadership`` is the
one-server case (SQLite): always the leader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from corral.store.base import Store


class Leadership(Protocol):
    def start(self, on_elected: Callable[[], None], on_demoted: Callable[[], None]) -> None:
        """Campaign in the background; call ``on_elected`` on winning and ``on_demoted`` on losing the office."""
        ...

    @property
    def is_leader(self) -> bool: ...

    def stop(self) -> None:
        """Resign (a successor need not wait for the lease to expire) and stop campaigning."""
        ...


class SoleLeadership:
    """One server: it is the leader from the start."""

    def __init__(self) -> None:
        self._leader = False
        self._on_demoted: Callable[[], None] | None = None

    def start(self, on_elected: Callable[[], None], on_demoted: Callable[[], None]) -> None:
        self._leader, self._on_demoted = True, on_demoted
        on_elected()

    @property
    def is_leader(self) -> bool:
        return self._leader

    def stop(self) -> None:
        if self._leader and self._on_demoted is not None:
            self._leader = False
            self._on_demoted()


def leadership_for(store: Store, name: str) -> Leadership:
    """The election a server of this store takes part in: etcd's lease election, or none (SQLite)."""
    from corral.store.etcd import EtcdStore

    if isinstance(store, EtcdStore):
        from corral.control.election import EtcdLeadership

        return EtcdLeadership(store, name)
    return SoleLeadership()
