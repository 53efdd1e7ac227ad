"""What a node offers the scheduler: the machine's capacity, or its part of it (`--cpu`, `--memory`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from corral.node.setup import NodeSettings, machine_capacity, node_info


def test_a_node_offers_the_machine_or_its_part_of_it(tmp_path: Path) -> None:
    cores, mem = machine_capacity()
    whole = node_info(NodeSettings(data_dir=tmp_path, zone="z1", labels={"disk": "ssd"}))
    assert (whole.cpu, whole.memoryGB, whole.zone, whole.labels) == (cores, mem, "z1", {"disk": "ssd"})
    part = node_info(NodeSettings(data_dir=tmp_path, cpu=0.5, memory_gb=1))
    assert (part.cpu, part.memoryGB) == (0.5, 1)
    with pytest.raises(ValidationError, match=r"--cpu .*at most this machine's"):
        NodeSettings(data_dir=tmp_path, cpu=cores + 1)
    with pytest.raises(ValidationError, match="--memory 0"):
        NodeSettings(data_dir=tmp_path, memory_gb=0)
