"""The store's reference table (canonical reference -> Image), one JSON file written atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from corral.errors import ImageError
from corral.fileio import atomic_write_json
from corral.node.images.locks import file_lock
from corral.node.images.models import Image

_VERSION = 1


class RefTable:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")

    def load(self) -> dict[str, Image]:
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
            table = self.load()
            change(table)
            atomic_write_json(self.path, {
                "version": _VERSION,
                "images": {ref: img.model_dump(mode="json") for ref, img in sorted(table.items())},
            })
            return table
