"""Counts of bound groups by tag selector and topology domain, for affinity and spread.

For each selector some group's placement reads (``retain``), how many running
bound groups match it on each node (sparse: families live on few nodes). For
each required anti-affinity term of a bound group, which nodes hold it, so a
newcomer matching the term keeps away too (anti-affinity is symmetric, as in
Kubernetes). Both are updated per bind and release; a selector seen for the
first time is filled from the tag index of bound groups.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from corral.scheduler.demand import NODE, Demand, Selector, Term
from corral.scheduler.nodes import Mask, NodeArrays

Pair = tuple[str, str, str]  # (scope, tag, value)
Counts = dict[int, int]  # node index -> groups


def _bump(counts: Counts, idx: int, delta: int) -> None:
    n = counts.get(idx, 0) + delta
    if n > 0:
        counts[idx] = n
    else:
        counts.pop(idx, None)


class Topology:
    def __init__(self, nodes: NodeArrays) -> None:
        self.nodes = nodes
        self.by_tag: dict[Pair, set[str]] = {}  # bound running groups carrying a tag value
        self.where: dict[str, tuple[int, Demand]] = {}  # those groups: node index, demand
        self.counts: dict[Selector, Counts] = {}
        self.refs: dict[Selector, int] = {}
        self._selectors_by: dict[Pair, set[Selector]] = {}  # each retained selector under one of its pairs
        self._filed: dict[Selector, Pair] = {}
        self.anti: dict[Term, Counts] = {}
        self._anti_by: dict[Pair, set[Term]] = {}

    # selectors read by placements ----------------------------------------------
    def _index_pair(self, sel: Selector) -> Pair:
        # File the selector under its rarest tag value: a bind then checks few selectors.
        pairs = [(sel.scope, k, v) for k, v in sel.tags]
        return min(pairs, key=lambda p: len(self.by_tag.get(p, ())))

    def retain(self, sel: Selector) -> None:
        n = self.refs.get(sel, 0)
        self.refs[sel] = n + 1
        if n == 0:
            self.counts[sel] = self._count(sel)
            pair = self._filed[sel] = self._index_pair(sel)
            self._selectors_by.setdefault(pair, set()).add(sel)

    def release(self, sel: Selector) -> None:
        n = self.refs.get(sel, 0) - 1
        if n > 0:
            self.refs[sel] = n
            return
        self.refs.pop(sel, None)
        self.counts.pop(sel, None)
        pair = self._filed.pop(sel, None)
        if pair is not None:
            bucket = self._selectors_by[pair]
            bucket.discard(sel)
            if not bucket:
                del self._selectors_by[pair]

    def _count(self, sel: Selector) -> Counts:
        sets = [self.by_tag.get((sel.scope, k, v), set()) for k, v in sel.tags]
        out: Counts = {}
        for key in min(sets, key=len) if sets else ():
            idx, d = self.where[key]
            if sel.matches(d.scope, d.tags):
                _bump(out, idx, 1)
        return out

    def node_counts(self, sel: Selector) -> Counts:
        """Matching bound groups per node (counted on the spot for a selector nobody retained)."""
        got = self.counts.get(sel)
        return got if got is not None else self._count(sel)

    # binds and releases -----------------------------------------------------------
    def _pairs(self, d: Demand) -> Iterable[Pair]:
        return ((d.scope, k, v) for k, v in d.tags.items())

    def add(self, d: Demand, idx: int) -> None:
        self._apply(d, idx, 1)

    def remove(self, d: Demand, idx: int) -> None:
        self._apply(d, idx, -1)

    def _apply(self, d: Demand, idx: int, delta: int) -> None:
        seen: set[Selector] = set()
        for pair in self._pairs(d):
            bucket = self.by_tag.setdefault(pair, set())
            if delta > 0:
                bucket.add(d.key)
            else:
                bucket.discard(d.key)
                if not bucket:
                    del self.by_tag[pair]
            for sel in self._selectors_by.get(pair, ()):
                if sel not in seen and sel.matches(d.scope, d.tags):
                    seen.add(sel)
                    _bump(self.counts[sel], idx, delta)
        if delta > 0:
            self.where[d.key] = (idx, d)
        else:
            self.where.pop(d.key, None)
        for term in d.anti_affinity:
            holders = self.anti.setdefault(term, {})
            _bump(holders, idx, delta)
            filed = (term.selector.scope, *term.selector.tags[0])  # any one pair finds every match
            if holders:
                self._anti_by.setdefault(filed, set()).add(term)
            else:
                del self.anti[term]
                self._anti_by.get(filed, set()).discard(term)

    def anti_terms_against(self, d: Demand) -> list[tuple[Term, Counts]]:
        """Required anti-affinity terms of bound groups that ``d`` matches, with the nodes holding them."""
        out = []
        for pair in self._pairs(d):
            for term in self._anti_by.get(pair, ()):
                if term.selector.matches(d.scope, d.tags):
                    out.append((term, self.anti[term]))
        return out

    # domains ----------------------------------------------------------------------
    def domain_counts(self, counts: Counts, key: str) -> np.ndarray:
        """Per node: how many matching groups share its domain (node or zone); 0 for a node without a zone."""
        nodes = self.nodes
        if key == NODE:
            out = np.zeros(nodes.n, dtype=np.int64)
            if counts:
                out[list(counts)] = list(counts.values())
            return out
        per_zone = self.zone_counts(counts)
        zone = nodes.zone[: nodes.n]
        return np.where(zone >= 0, per_zone[zone], 0)

    def zone_counts(self, counts: Counts) -> np.ndarray:
        nodes = self.nodes
        per_zone = np.zeros(len(nodes.zone_names) + 1, dtype=np.int64)  # last slot: no zone
        for idx, c in counts.items():
            per_zone[nodes.zone[idx]] += c
        return per_zone

    def mark(self, out: Mask, counts: Counts, key: str, value: bool) -> None:
        """Set ``out`` to ``value`` on the nodes whose domain holds at least one of the counted groups."""
        if not counts:
            return
        if key == NODE:
            out[list(counts)] = value
            return
        nodes = self.nodes
        zone = nodes.zone[: nodes.n]
        held = np.zeros(len(nodes.zone_names) + 1, dtype=bool)  # last slot: no zone, never a domain
        held[[nodes.zone[i] for i in counts]] = True
        held[-1] = False
        out[held[zone]] = value

    def presence(self, counts: Counts, key: str) -> Mask:
        """Nodes whose domain holds at least one matching group."""
        out = np.zeros(self.nodes.n, dtype=bool)
        self.mark(out, counts, key, True)
        return out
