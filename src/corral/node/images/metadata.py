"""The store's reference table (canonical reference -> Image), one JSON file written atomically."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from corral.errors import ImageError
from corral.fileio import atomic_write_json
from corral.node.images.locks import file_lock
from corral.node.images.models import Image

_VERSION = 1


# A table file changed this recently is read again each time: its timestamp is too coarse to tell two
# versions written within the same tick apart (racy-git's rule).
_SETTLED_NS = 2_000_000_000


class RefTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        # The parsed table and the file identity it came from: every container start looks images up.
        self._cached: tuple[tuple[int, int, int, int], dict[str, Image]] | None = None

    def load(self) -> dict[str, Image]:
        """The table as a new dict (the Image values are shared: treat them as read-only)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        ident = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if self._cached is not None and self._cached[0] == ident:
            return dict(self._cached[1])
        table = self._read()
        if time.time_ns() - st.st_ctime_ns > _SETTLED_NS:
            self._cached = (ident, table)
        return dict(table)

    def _read(self) -> dict[str, Image]:
        # Writers replace the file atomically, so an unlocked read sees a whole version.
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ImageError(f"image store metadata {self.path} is corrupt ({exc}); remove it and pull again"
                             ) from exc
        return {ref: Image.model_validate(obj) for ref, obj in raw.get("images", {}).items()}

    def update(self, change: Callable[[dict[str, Image]], None]) -> dict[str, Image]:
        """Read-modify-write under an exclusive lock; returns the new table."""
        with file_lock(self.lock_path):
            table = self._read()
            change(table)
            atomic_write_json(self.path, {
                "version": _VERSION,
                "images": {ref: img.model_dump(mode="json") for ref, img in sorted(table.items())},
            })
            return table
