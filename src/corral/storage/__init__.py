"""Storage servers for the file shares of a cluster (GlusterFS)."""
