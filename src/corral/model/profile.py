"""Container group profiles (``Microsoft.ContainerInstance/containerGroupProfiles``): a group template with revisions.

The properties are a container group's; every PUT that changes them makes a new
revision, kept whole under its number so groups can be made from any revision
later. ``merge_properties`` is how a group made from a profile gets its
properties: the revision's, under what the request (or the NGroup) sets itself.
"""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from corral.model.group import GroupProperties, Wire
from corral.model.records import StoredRecord

# Read-only on the wire: never taken from a request.
READ_ONLY = ("revision", "registeredRevisions", "provisioningState", "instanceView")
# What a container group body carries to name its profile and pool; not part of the template.
REFERENCE_FIELDS = ("containerGroupProfile", "standbyPoolProfile", "isCreatedFromStandbyPool")


class ProfileSpec(Wire):
    """A PUT body; also the stored desired state (and each revision's content)."""

    location: str | None = None
    tags: dict[str, str] | None = None
    zones: list[str] | None = None
    properties: GroupProperties


class ProfileMeta(BaseModel):
    uid: str
    subscription: str
    resourceGroup: str
    name: str
    createdAt: datetime
    revision: int = 1
    revisions: list[int] = Field(default_factory=lambda: [1])


class ProfileRecord(StoredRecord):
    spec: ProfileSpec
    meta: ProfileMeta


class RevisionRecord(StoredRecord):
    revision: int
    createdAt: datetime
    spec: ProfileSpec


def clean_profile_body(body: dict[str, Any]) -> dict[str, Any]:
    """A profile PUT body without the read-only fields a client may echo back."""
    body = dict(body)
    props = dict(body.get("properties") or {})
    for k in READ_ONLY:
        props.pop(k, None)
    body["properties"] = props
    return body


def template_properties(props: dict[str, Any]) -> dict[str, Any]:
    """What of a profile's properties makes a revision: everything but read-only fields."""
    return {k: v for k, v in props.items() if k not in READ_ONLY}


def _merge_volumes(base: list[dict[str, Any]], over: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [copy.deepcopy(x) for x in base]
    index = {str(x.get("name")): i for i, x in enumerate(out)}
    for item in over:
        if str(item.get("name")) in index:
            out[index[str(item.get("name"))]] = copy.deepcopy(item)
        else:
            out.append(copy.deepcopy(item))
    return out


def _merge_containers(base: list[dict[str, Any]], over: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A request's containers over a profile's: by name, key by key. One without an image only adjusts
    the profile's container of its name or, failing that, of its position (``az container create`` names
    it after the group): what it may set there is environment, mounts, command and config map, not the
    resources the profile decides."""
    out = [copy.deepcopy(x) for x in base]
    index = {str(x.get("name")): i for i, x in enumerate(out)}
    for pos, item in enumerate(over):
        name = str(item.get("name"))
        props = {k: copy.deepcopy(v) for k, v in (item.get("properties") or {}).items() if v is not None}
        if props.get("configMap") in ({}, {"keyValuePairs": {}}, {"keyValuePairs": None}):
            del props["configMap"]
        if name in index:
            target = index[name]
        elif not props.get("image") and pos < len(out):
            target = pos
            props.pop("resources", None)
        elif props.get("image"):
            out.append(copy.deepcopy(item))
            continue
        else:
            raise ValueError(f"container '{name}' is not in the container group profile (and has no image)")
        out[target].setdefault("properties", {}).update(props)
    return out


def merge_properties(template: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A group's properties from a profile revision and what the request sets itself.

    Containers are matched by name and their properties overridden key by key (an NGroup
    sets only ``volumeMounts``), see ``_merge_containers``; volumes by name; any other key
    replaces the profile's. ValueError when an override names a container the profile does not have.
    """
    out = copy.deepcopy(template_properties(template))
    for key, value in overrides.items():
        if key in READ_ONLY:
            continue
        if value is None:
            continue
        if key == "containers" and isinstance(value, list):
            out["containers"] = _merge_containers(out.get("containers") or [], value)
        elif key == "volumes" and isinstance(value, list):
            out["volumes"] = _merge_volumes(out.get("volumes") or [], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
