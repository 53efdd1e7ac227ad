"""Which container groups an NGroup's metrics are read from, over time.

An NGroup's members are the groups of its resource group that carry its uid tag (``corral-ngroup-uid``,
set by the orchestrator on the groups it makes). Members come and go (scaling, replacement, rolling
updates), so the record of who was a member when is the meter's usage records (``control/metering.py``):
one per group that ever ran, naming its NGroup, with its running intervals, kept after the group is deleted.
A query counts every member that ran within its timespan; the compactor keeps the metrics of deleted
members while their NGroup exists (they age out with the retention).
"""

from __future__ import annotations

from corral.control.metering import METERING, UsageRecord
from corral.model.armids import NGROUPS
from corral.model.ngroup import NGroupMeta
from corral.store.base import Store


def ngroup_members(store: Store, ngroup: NGroupMeta, start: float, end: float) -> list[tuple[str, str]]:
    """(name, uid) of the members of ``ngroup`` that ran within [start, end) (epoch seconds), by name."""
    prefix = f"{METERING}{ngroup.subscription.lower()}/{ngroup.resourceGroup.lower()}/"
    out = []
    for r in store.list(prefix):
        if r.value.get("ngroup") != ngroup.uid:  # the cheap test first: most records are other groups'
            continue
        rec = UsageRecord.model_validate(r.value)
        if rec.ran_within(start, end):
            out.append((rec.name, rec.uid))
    return sorted(out)


def member_uids_kept(store: Store) -> set[str]:
    """The uids of every group that was a member of an NGroup that still exists (deleted members included)."""
    ngroups = {r.value["meta"]["uid"] for r in store.list(NGROUPS)}
    if not ngroups:
        return set()
    return {r.value["uid"] for r in store.list(METERING) if r.value.get("ngroup") in ngroups}
