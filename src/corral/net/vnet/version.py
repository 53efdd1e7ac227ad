"""CNI spec versions corral-vnet speaks (a module of its own so VERSION loads nothing else)."""

SUPPORTED_VERSIONS = ["0.4.0", "1.0.0", "1.1.0"]
