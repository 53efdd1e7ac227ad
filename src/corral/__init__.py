"""Corral: serverless container instances on your own Linux machines."""

__version__ = "0.1.0"
