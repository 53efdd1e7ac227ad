"""The ARM surface a client meets first: auth, api-version, error shapes, paths, tags, provider routes."""

from __future__ import annotations

import ssl

import httpx
from corral_server import CorralServer
from groups import container, delete, group, put

RG = "it-api"


def raw(corral: CorralServer, token: str | None = "ok") -> httpx.Client:
    cfg = corral.config
    headers = {} if token is None else {"Authorization": f"Bearer {cfg.token if token == 'ok' else token}"}
    return httpx.Client(base_url=cfg.endpoint, verify=ssl.create_default_context(cafile=cfg.ca_cert), headers=headers)


def test_https_with_the_generated_ca_and_token_auth(corral: CorralServer) -> None:
    cfg = corral.config
    assert cfg.endpoint.startswith("https://") and cfg.ca_cert
    path = f"/subscriptions/{cfg.subscription}/providers/Microsoft.ContainerInstance/containerGroups"
    params = {"api-version": "2023-05-01"}
    for client in (raw(corral, None), raw(corral, "forged")):
        r = client.get(path, params=params)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "AuthenticationFailed"
    assert raw(corral).get(path, params=params).status_code == 200


def test_missing_api_version_and_not_found_are_arm_errors(corral: CorralServer) -> None:
    c = raw(corral)
    sub = corral.config.subscription
    path = f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/containerGroups/nope"
    r = c.get(path)
    assert r.status_code == 400 and r.json()["error"]["code"] == "MissingApiVersionParameter"
    r = c.get(path, params={"api-version": "2024-05-01-preview"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound"
    assert c.delete(path, params={"api-version": "2023-05-01"}).status_code == 204


def test_paths_are_case_insensitive_and_tags_patch(corral: CorralServer) -> None:
    client = corral.client()
    put(client, RG, "tagged", group(container("tagged", ["sleep", "3600"])))
    try:
        c = raw(corral)
        sub = corral.config.subscription
        odd = (f"//subscriptions/{sub}/resourcegroups/{RG.upper()}"
               "/providers/microsoft.containerinstance/containergroups/tagged")
        r = c.get(corral.config.endpoint + odd, params={"api-version": "2023-05-01"})
        assert r.status_code == 200 and r.json()["name"] == "tagged"
        r = c.patch(corral.config.endpoint + odd, params={"api-version": "2023-05-01"}, json={"tags": {"team": "a"}})
        assert r.status_code == 200 and r.json()["tags"] == {"team": "a"}
        listed = c.get(f"/subscriptions/{sub}/providers/Microsoft.ContainerInstance/containerGroups",
                       params={"api-version": "2023-05-01"}).json()["value"]
        mine = [g for g in listed if g["name"] == "tagged"]
        assert mine[0]["properties"]["instanceView"]["state"] == "Running"  # instanceView in lists
    finally:
        delete(client, RG, "tagged")


def test_put_that_fails_validation_leaves_the_stored_group_untouched(corral: CorralServer) -> None:
    client = corral.client()
    before = put(client, RG, "keep", group(container("keep", ["sleep", "3600"])))
    try:
        bad = group(container("keep", ["sleep", "3600"], cpu=-1))
        c = raw(corral)
        r = c.put(client.group_path(RG, "keep"), params={"api-version": "2023-05-01"}, json=bad)
        assert r.status_code == 400 and "cpu" in r.json()["error"]["message"]
        r = c.put(client.group_path(RG, "keep"), params={"api-version": "2023-05-01"}, content=b"{not json")
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
        after = client.request("GET", client.group_path(RG, "keep")).json()
        assert after["properties"]["containers"] == before["properties"]["containers"]
    finally:
        delete(client, RG, "keep")


def test_provider_routes(corral: CorralServer) -> None:
    c = raw(corral)
    sub = corral.config.subscription
    v = {"api-version": "2023-05-01"}
    ops = c.get("/providers/Microsoft.ContainerInstance/operations", params=v).json()["value"]
    assert any(o["name"].endswith("containerGroups/write") for o in ops)
    base = f"/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/local"
    usages = c.get(f"{base}/usages", params=v).json()["value"]
    assert {u["name"]["value"] for u in usages} >= {"ContainerGroups", "StandardCores"}
    assert c.get(f"{base}/capabilities", params=v).json()["value"][0]["osType"] == "Linux"


def test_a_template_deployment_with_a_bad_resource_is_a_400_that_deploys_nothing(corral: CorralServer) -> None:
    c = raw(corral)
    sub = corral.config.subscription
    vnet = {"type": "Microsoft.Network/virtualNetworks", "name": "dep-vnet", "location": "local",
            "properties": {"addressSpace": {"addressPrefixes": ["10.199.0.0/16"]}}}
    unnamed_lb = {"type": "Microsoft.Network/loadBalancers"}
    bad_output = {"o": {"value": "[reference('nope')]"}}
    for props, field in (({"template": {"resources": [vnet, unnamed_lb]}}, "name"),
                         ({"template": {"resources": [vnet], "outputs": bad_output}}, "output"),
                         ("a template", "template")):
        r = c.put(f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.Resources/deployments/d",
                  params={"api-version": "2022-09-01"}, json={"properties": props})
        assert r.status_code == 400 and field in r.json()["error"]["message"]
    r = c.get(f"/subscriptions/{sub}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/dep-vnet",
              params={"api-version": "2023-09-01"})
    assert r.status_code == 404
