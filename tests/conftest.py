"""Shared fixtures: a real Corral server and clients for it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from corral_server import CorralServer  # noqa: E402

pytest_plugins = ["runtime_support", "etcd_support"]  # `rootfs`; `etcd`, `etcd_namespace`


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root (containers, namespaces, cgroups)")
        for item in items:
            if "integration" in str(item.fspath) or "conformance" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def corral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    """One Corral all-in-one for the session, with the busybox base image cached."""
    server = CorralServer(tmp_path_factory.mktemp("corral"))
    server.build_base_image()
    server.start()
    try:
        yield server
    finally:
        server.close()
