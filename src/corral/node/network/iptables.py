"""Find and remove iptables leftovers of a CNI container (fallback for crash recovery).

The bridge plugin can only undo its masquerade rules while the container's netns
exists; after a crash that lost the netns, the rules are found by the comment CNI
plugins put on them (``name: "<net>" id: "<container id>"``) and removed here.
"""

from __future__ import annotations

import shlex
import subprocess

_TABLES = ("nat", "filter")


def _save(table: str) -> list[str]:
    out = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()


def _ipt(*args: str) -> None:
    subprocess.run(["iptables", "-w", *args], capture_output=True, check=False)


def cni_comment(network: str, container_id: str) -> str:
    """The comment CNI plugins tag a container's rules with, as ``iptables-save`` prints it."""
    return f'name: \\"{network}\\" id: \\"{container_id}\\"'


def purge_by_comment(needle: str) -> int:
    """Delete every rule whose line contains ``needle`` and the CNI-* chains they jump to."""
    removed = 0
    for table in _TABLES:
        lines = _save(table)
        chains: set[str] = set()
        for line in lines:
            if not line.startswith("-A ") or needle not in line:
                continue
            parts = shlex.split(line)
            if "-j" in parts:
                target = parts[parts.index("-j") + 1]
                if target.startswith("CNI-"):
                    chains.add(target)
            _ipt("-t", table, "-D", *parts[1:])
            removed += 1
        for chain in chains:
            _ipt("-t", table, "-F", chain)
            _ipt("-t", table, "-X", chain)
    return removed


def chain_rules(table: str, chain: str) -> list[str] | None:
    """The ``-A`` lines of a chain, or None when the chain does not exist."""
    lines = _save(table)
    if not any(line == f":{chain}" or line.startswith(f":{chain} ") for line in lines):
        return None
    return [line for line in lines if line.startswith(f"-A {chain} ")]


def remove_chain(table: str, chain: str, jumps_from: tuple[str, ...]) -> None:
    """Remove the jumps to ``chain`` from ``jumps_from``, then the chain itself; fine if absent."""
    lines = _save(table)
    for parent in jumps_from:
        for line in lines:
            if line.startswith(f"-A {parent} ") and line.endswith(f"-j {chain}"):
                _ipt("-t", table, "-D", *shlex.split(line)[1:])
    _ipt("-t", table, "-F", chain)
    _ipt("-t", table, "-X", chain)
