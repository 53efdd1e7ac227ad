"""Usage metrics of container groups: the definitions (Azure Monitor's names), the history the control plane
keeps (recent minutes in memory where samples arrive, minute and hour rollups in the store), its compaction,
and the query arithmetic behind the Azure Monitor metrics API."""
