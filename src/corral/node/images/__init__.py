"""The node's image store: registry pulls, content-addressed layers, overlayfs root filesystems."""

from corral.node.images.models import Image, ImageConfig, RegistryCredential
from corral.node.images.reference import ImageReference
from corral.node.images.store import ImageStore

__all__ = ["Image", "ImageConfig", "ImageReference", "ImageStore", "RegistryCredential"]
