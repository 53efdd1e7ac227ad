"""Choose this node's platform from an image index / manifest list."""

from __future__ import annotations

import platform
from typing import Any

from corral.errors import ImageError

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}


def host_arch() -> str:
    return _ARCH.get(platform.machine(), platform.machine())


def pick_manifest(index: dict[str, Any], what: str) -> dict[str, Any]:
    """Return the descriptor of the linux/<host arch> manifest in an index."""
    arch = host_arch()
    available = []
    for desc in index.get("manifests") or []:
        plat = desc.get("platform") or {}
        available.append(f"{plat.get('os', '?')}/{plat.get('architecture', '?')}")
        if plat.get("os") == "linux" and plat.get("architecture") == arch:
            return dict(desc)
    raise ImageError(f"{what} has no linux/{arch} image; it offers: {', '.join(available) or 'nothing'}")
