"""Volumes for container groups: emptyDir, secret (tmpfs), gitRepo, azureFile (node shares)."""

from corral.node.volumes.manager import VolumeManager
from corral.node.volumes.shares import Share, ShareBackend, ShareStore
from corral.node.volumes.spec import AzureFileSpec, GitRepoSpec, VolumeSpec

__all__ = [
    "AzureFileSpec", "GitRepoSpec", "Share", "ShareBackend", "ShareStore", "VolumeManager", "VolumeSpec",
]
