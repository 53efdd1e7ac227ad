"""`corral container create` placement flags -> the group's ``zones``, ``tags`` and ``properties.placement``.

    --zone 1                         only nodes in zone 1 (repeatable)
    --tags app=web                   the group's tags (repeatable), which affinity and spread match
    --node-selector disk=ssd         node labels (repeatable)
    --affinity app=db@zone           required: in a zone holding a group tagged app=db
    --affinity app=cache:50          preferred (a weight 1-100), on the same node
    --anti-affinity app=web@node     required: never on a node holding a group tagged app=web
    --spread ngroup@zone:1           the groups sharing this group's value of tag ngroup spread over
                                     zones, at most 1 apart (add --spread-anyway to make it a preference)
"""

from __future__ import annotations

from typing import Any

import typer

TOPOLOGY_KEYS = ("node", "zone")


def pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    """Repeated ``k=v[,k=v]`` flags as a dict (a later key wins)."""
    out: dict[str, str] = {}
    for item in values or []:
        for part in item.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k.strip():
                raise typer.BadParameter(f"'{part}' is not KEY=VALUE", param_hint=flag)
            out[k.strip()] = v.strip()
    return out


def _key_and_number(spec: str, flag: str, what: str) -> tuple[str, str | None, int | None]:
    """``BODY[@KEY][:N]`` -> (BODY, KEY, N)."""
    body, _, number = spec.partition(":")
    body, _, key = body.partition("@")
    if key and key not in TOPOLOGY_KEYS:
        raise typer.BadParameter(f"'{spec}': the topology key after '@' is node or zone, not '{key}'",
                                 param_hint=flag)
    n = None
    if number:
        try:
            n = int(number)
        except ValueError:
            raise typer.BadParameter(f"'{spec}': {what} after ':' must be a whole number", param_hint=flag) from None
    return body, key or None, n


def term(spec: str, flag: str) -> dict[str, Any]:
    """``k=v[,k=v...][@node|@zone][:WEIGHT]``: with a weight, a preference."""
    tags, key, weight = _key_and_number(spec, flag, "the weight")
    out: dict[str, Any] = {"tags": pairs([tags], flag), "topologyKey": key or "node"}
    if weight is not None:
        out.update(required=False, weight=weight)
    return out


def spread(spec: str, anyway: bool) -> dict[str, Any]:
    """``TAG[@zone|@node][:MAXSKEW]``."""
    tag, key, skew = _key_and_number(spec, "--spread", "maxSkew")
    if not tag or "=" in tag:
        raise typer.BadParameter(f"'{spec}': name the tag whose value makes the family (TAG[@KEY][:MAXSKEW])",
                                 param_hint="--spread")
    out: dict[str, Any] = {"tag": tag, "topologyKey": key or "zone", "maxSkew": 1 if skew is None else skew}
    if anyway:
        out["whenUnsatisfiable"] = "ScheduleAnyway"
    return out


def apply_flags(body: dict[str, Any], zones: list[str] | None, tags: list[str] | None,
                node_selector: list[str] | None, affinity: list[str] | None, anti_affinity: list[str] | None,
                spreads: list[str] | None, spread_anyway: bool) -> None:
    """Add the flags to a request body (from flags or a file): the flags win over the file."""
    if zones:
        body["zones"] = list(zones)
    if tags:
        body["tags"] = {**(body.get("tags") or {}), **pairs(tags, "--tags")}
    placement: dict[str, Any] = dict(body["properties"].get("placement") or {})
    if node_selector:
        placement["nodeSelector"] = pairs(node_selector, "--node-selector")
    if affinity:
        placement["affinity"] = [term(a, "--affinity") for a in affinity]
    if anti_affinity:
        placement["antiAffinity"] = [term(a, "--anti-affinity") for a in anti_affinity]
    if spreads:
        placement["spread"] = [spread(s, spread_anyway) for s in spreads]
    if placement:
        body["properties"]["placement"] = placement
