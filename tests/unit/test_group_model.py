"""Validation of container group bodies: every bad input names its field and the reason."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from corral.api.errors import validation_response
from corral.api.paths import canonical_path
from corral.model.group import ContainerGroup


def body(**props: Any) -> dict[str, Any]:
    c = {"name": "app", "properties": {"image": "corral/busybox", "resources": {"requests": {"cpu": 1,
                                                                                            "memoryInGB": 1}}}}
    return {"location": "local", "properties": {"containers": [c], **props}}


def errors_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        ContainerGroup.model_validate(doc)
    import json

    resp = validation_response(list(exc.value.errors()))
    return [d["message"] for d in json.loads(resp.body)["error"]["details"]]


def test_defaults_follow_aci() -> None:
    g = ContainerGroup.model_validate({"properties": {"containers": [{"name": "a", "properties": {"image": "x"}}]}})
    assert g.properties.osType == "Linux" and g.properties.restartPolicy == "Always"
    req = g.properties.containers[0].properties.resources.requests
    assert (req.cpu, req.memoryInGB) == (1.0, 1.5)


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda b: b["properties"]["containers"][0]["properties"].pop("image"), "image", "required"),
        (lambda b: b["properties"]["containers"][0]["properties"]["resources"]["requests"].update(cpu=0),
         "requests.cpu", "greater than 0"),
        (lambda b: b["properties"].update(restartPolicy="Sometimes"), "restartPolicy", "Always"),
        (lambda b: b["properties"]["containers"][0].update(name="Bad_Name"), "containers[0].name", "not a valid"),
        (lambda b: b["properties"]["containers"].append(b["properties"]["containers"][0]), "properties",
         "unique"),
        (lambda b: b["properties"]["containers"][0]["properties"].update(
            volumeMounts=[{"name": "v", "mountPath": "/data"}]), "properties", "does not define"),
        (lambda b: b["properties"].update(ipAddress={"type": "Public", "ports": [{"port": 80}]}), "properties",
         "not a port of any container"),
        (lambda b: b["properties"]["containers"][0]["properties"]["resources"].update(limits={"cpu": 2}),
         "properties", "greater than the total request"),
        (lambda b: b["properties"].update(volumes=[{"name": "v", "emptyDir": {}, "secretPermissions": {}}]),
         "volumes[0]", "secret volumes only"),
        (lambda b: b["properties"].update(volumes=[{"name": "v", "secret": {"a": "YQ=="},
                                                    "secretPermissions": {"modes": {"b": 0o400}}}]),
         "volumes[0]", "does not have: b"),
        (lambda b: b["properties"].update(volumes=[{"name": "v", "secret": {"a": "YQ=="},
                                                    "secretPermissions": {"modes": {"a": 0o4755}}}]),
         "secretPermissions.modes", "from 0 to 511"),
        (lambda b: b["properties"]["containers"][0]["properties"].update(
            securityContext={"supplementalGroups": [-1]}), "supplementalGroups", "group ids"),
    ],
)
def test_bad_input_names_field_and_reason(mutate, field: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    doc = body()
    mutate(doc)
    messages = errors_of(doc)
    assert any(field in m and reason in m for m in messages), messages


def test_paths_are_matched_case_insensitively_and_slashes_collapse() -> None:
    p = "//subscriptions/S/resourcegroups/RG/providers/microsoft.containerinstance/CONTAINERGROUPS/Web"
    assert canonical_path(p) == (
        "/subscriptions/S/resourceGroups/RG/providers/Microsoft.ContainerInstance/containerGroups/Web"
    )
