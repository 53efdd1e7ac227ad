"""Run code inside a namespace, or in namespaces of its own, on a throwaway thread.

Namespaces are per task: a fresh thread can setns()/unshare() without touching the
rest of the process, and whatever it joined dies with it, so it is never reused.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from corral.node.network import _libc

T = TypeVar("T")


def on_fresh_thread(fn: Callable[[], T], name: str = "corral-ns") -> T:
    """``fn()`` on a new thread; its result, or its exception raised here."""
    box: list[T] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            box.append(fn())
        except BaseException as exc:  # reported to the caller's thread
            errors.append(exc)

    t = threading.Thread(target=work, name=name, daemon=True)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return box[0]


def in_namespace(path: str | os.PathLike[str], nstype: int, fn: Callable[[], T], name: str = "corral-ns") -> T:
    """``fn()`` on a fresh thread that joined the namespace at ``path`` (``nstype``: a CLONE_NEW* flag)."""

    def joined() -> T:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _libc.setns(fd, nstype)
        finally:
            os.close(fd)
        return fn()

    return on_fresh_thread(joined, name)
