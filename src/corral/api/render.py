"""Desired state plus observed status, rendered as the ARM resource clients expect.

Secrets never leave: secure environment values, registry passwords, storage
account keys and secret volume contents are dropped here, on every response.
"""

from __future__ import annotations

from typing import Any

from corral.control.groups import GroupView, provisioning_state
from corral.model.status import ContainerStatus, GroupStatus

RESOURCE_TYPE = "Microsoft.ContainerInstance/containerGroups"


def group_id(sub: str, rg: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{RESOURCE_TYPE}/{name}"


def _dt(v: Any) -> Any:
    return v.isoformat().replace("+00:00", "Z") if hasattr(v, "isoformat") else v


def _container_view(cs: ContainerStatus | None) -> dict[str, Any]:
    if cs is None:
        return {"restartCount": 0, "currentState": {"state": "Waiting", "detailStatus": ""}, "events": []}
    # "ready" (readiness probes) is an extra key; the Azure SDK ignores keys it does not know.
    out = cs.model_dump(mode="json", exclude_none=True)
    return out


def strip_secrets(props: dict[str, Any]) -> None:
    for c in [*props.get("containers", []), *(props.get("initContainers") or [])]:
        for env in c["properties"].get("environmentVariables") or []:
            env.pop("secureValue", None)
    for cred in props.get("imageRegistryCredentials") or []:
        cred.pop("password", None)
    for vol in props.get("volumes") or []:
        if vol.get("azureFile"):
            vol["azureFile"].pop("storageAccountKey", None)
        if vol.get("secret") is not None:
            vol["secret"] = {k: None for k in vol["secret"]}


def render_group(view: GroupView, fqdn_zone: str | None = None) -> dict[str, Any]:
    rec = view.record
    meta = rec.meta
    spec = rec.spec.model_dump(mode="json", exclude_none=True)
    props: dict[str, Any] = spec.pop("properties")
    strip_secrets(props)
    st: GroupStatus | None = view.status
    for c in props["containers"]:
        c["properties"]["instanceView"] = _container_view(st.containers.get(c["name"]) if st else None)
        for p in c["properties"].get("ports") or []:
            p.setdefault("protocol", "TCP")
    for c in props.get("initContainers") or []:
        c["properties"]["instanceView"] = _container_view(st.initContainers.get(c["name"]) if st else None)
    ip = props.get("ipAddress")
    if ip is not None:
        if st and st.ip:
            ip["ip"] = st.ip
        if ip.get("dnsNameLabel") and fqdn_zone:
            ip["fqdn"] = f"{ip['dnsNameLabel']}.{rec.spec.location}.{fqdn_zone}"
    props["provisioningState"] = provisioning_state(view)
    if meta.fromStandbyPool:
        props["isCreatedFromStandbyPool"] = True
    state = "Pending"
    if meta.deleting:
        state = st.state if st else "Pending"
    elif st is not None:
        state = st.state
    props["instanceView"] = {
        "state": state,
        "events": [e.model_dump(mode="json") for e in (st.events if st else [])],
    }
    if st is not None and st.privateIp:
        # Corral extension: the group's own address in its virtual network, whatever its ipAddress type.
        props["instanceView"]["privateIp"] = st.privateIp
    out: dict[str, Any] = {
        "id": group_id(meta.subscription, meta.resourceGroup, meta.name),
        "name": meta.name,
        "type": RESOURCE_TYPE,
        "location": rec.spec.location,
        "properties": props,
    }
    for k in ("tags", "zones", "identity"):
        if spec.get(k) is not None:
            out[k] = spec[k]
    out.setdefault("tags", {})
    return out
