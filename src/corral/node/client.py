"""The in-process ``NodeClient``: what the control plane may ask this node directly."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from corral.errors import NotFound
from corral.node.host import NodeHost, container_id
from corral.node.logs import follow_logs, read_logs


class LocalNodeClient:
    def __init__(self, host: NodeHost) -> None:
        self.host = host

    def _log(self, uid: str, container: str):  # type: ignore[no-untyped-def]
        path = self.host.log_path(uid, container)
        if not path.exists() and self.host.log_path(uid, container, init=True).exists():
            path = self.host.log_path(uid, container, init=True)
        return path

    def logs(self, uid: str, container: str, tail: int | None, timestamps: bool) -> str:
        return read_logs(self._log(uid, container), tail=tail, timestamps=timestamps)

    def follow_logs(
        self, uid: str, container: str, timestamps: bool, stop: Callable[[], bool], tail: int | None = None
    ) -> Iterator[str]:
        return follow_logs(self._log(uid, container), stop, timestamps=timestamps, tail=tail)

    def exec(self, uid: str, container: str, argv: list[str], timeout: float | None) -> tuple[int, bytes, bytes]:
        from corral.node.exec import exec_capture

        cid = container_id(uid, container)
        if self.host.runtime.state(cid).status != "running":
            raise NotFound(f"container '{container}' is not running")
        return exec_capture(self.host.runtime, cid, argv, timeout=timeout)

    def cached_images(self) -> list[str]:
        return [img.reference for img in self.host.images.list()]
