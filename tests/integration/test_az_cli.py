"""The real Azure CLI (`az`, installed in .venv-az by `make az`) against a real `corral up`:
cloud registration and managed-identity login through `corral az-login`, `az network` and
`az container` verbs, and the token endpoint's authentication."""

from __future__ import annotations

import ipaddress
import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from corral_server import CorralServer, running_corral

from corral.api.auth import issue_jwt
from corral.cli.azlogin import REPO_AZ, az_env

RG = "azcli"
SUB = "00000000-0000-0000-0000-000000000000"
TOKEN_PATH = "/metadata/identity/oauth2/token"
IMAGE = "corral/busybox:latest"
# Exits at once on SIGTERM (a plain `sleep` as PID 1 ignores it), so deletes are quick.
CMD = "sh -c 'echo hello-from-az; trap \"exit 0\" TERM; sleep 3600 & wait'"

pytestmark = pytest.mark.skipif(not REPO_AZ.exists(), reason=f"the Azure CLI is not installed at {REPO_AZ} "
                                "(`make az` installs it)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    root = tmp_path_factory.mktemp("azcli")
    # az keeps its clouds, login and token cache under AZURE_CONFIG_DIR, never in the user's ~/.azure.
    with running_corral(root, bridge="ctaz0", subnet="10.79.0.0/16", cgroup_parent="/corral-test-az",
                        env={"AZURE_CONFIG_DIR": str(root / "azure")}) as srv:
        yield srv


@pytest.fixture(scope="module")
def az_environ(server: CorralServer) -> dict[str, str]:
    """Logged in through `corral az-login`; the environment every az call then needs."""
    out = server.cli("az-login", "--az", str(REPO_AZ)).stdout
    assert "az login --identity" in out and server.config.token not in out  # the secret is not printed
    exports = server.cli("az-login", "--print-env").stdout
    assert f"IDENTITY_ENDPOINT={server.config.endpoint}{TOKEN_PATH}" in exports
    return {**server.env, **az_env(server.config)}


def az(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(REPO_AZ), *args], env=env, capture_output=True, text=True, timeout=120,
                         stdin=subprocess.DEVNULL)
    if check and res.returncode != 0:
        raise AssertionError(f"az {' '.join(args)} failed ({res.returncode}): {res.stdout}\n{res.stderr}")
    return res


def az_json(env: dict[str, str], *args: str) -> object:
    return json.loads(az(env, *args, "-o", "json").stdout)


def wait_running(env: dict[str, str], name: str, timeout: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        g = az_json(env, "container", "show", "-g", RG, "-n", name)
        assert isinstance(g, dict)
        if g["instanceView"]["state"] == "Running":
            return g
        assert time.monotonic() < deadline, f"{name} is not Running after {timeout} s: {g['instanceView']}"
        time.sleep(0.3)


def test_token_endpoint_authenticates(server: CorralServer) -> None:
    cfg = server.config
    url = cfg.endpoint + TOKEN_PATH
    params = {"api-version": "2019-08-01", "resource": "https://management.corral.local/"}
    with httpx.Client(verify=ssl.create_default_context(cafile=cfg.ca_cert), timeout=10) as http:
        for headers in ({}, {"X-IDENTITY-HEADER": "not-the-token"}, {"Authorization": f"Bearer {cfg.token}"}):
            r = http.get(url, params=params, headers=headers)
            assert r.status_code == 401, r.text
            assert r.json()["error"]["code"] == "AuthenticationFailed" and "access_token" not in r.text
        secret = {"X-IDENTITY-HEADER": cfg.token}
        r = http.get(url, params={"api-version": "2019-08-01"}, headers=secret)
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidResource", r.text
        r = http.get(url, params={**params, "resource": "https://graph.microsoft.com/"}, headers=secret)
        assert r.status_code == 400 and "graph.microsoft.com" in r.json()["error"]["message"]
        r = http.get(url, params=params, headers=secret)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["expires_in"] > 300 and int(body["expires_on"]) > time.time() + 300

        subs = cfg.endpoint + "/subscriptions"
        version = {"api-version": "2022-12-01"}

        def status(bearer: str) -> int:
            return http.get(subs, params=version, headers={"Authorization": f"Bearer {bearer}"}).status_code

        assert status(body["access_token"]) == 200  # the issued JWT
        assert status(cfg.token) == 200  # the installation token, as before
        head, claims, sig = body["access_token"].split(".")
        assert status(f"{head}.{claims}.{sig[:-2]}AA") == 401  # signature tampered with
        expired = issue_jwt(cfg.token, lifetime=60, now=int(time.time()) - 120).access_token
        r = http.get(subs, params=version, headers={"Authorization": f"Bearer {expired}"})
        assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
        assert status(issue_jwt("some-other-installation").access_token) == 401
        assert http.get(subs, params=version).status_code == 401

        # ARM-shaped 4xx for bad input on the resource-manager routes
        r = http.get(f"{subs}/{SUB}/resourcegroups/bad%20name.", params=version,
                     headers={"Authorization": f"Bearer {cfg.token}"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidResourceGroupName", r.text
        r = http.get(f"{subs}/11111111-1111-1111-1111-111111111111", params=version,
                     headers={"Authorization": f"Bearer {cfg.token}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "SubscriptionNotFound", r.text


def test_az_network_and_container_round_trip(server: CorralServer, az_environ: dict[str, str]) -> None:
    env = az_environ
    account = az_json(env, "account", "show")
    assert isinstance(account, dict) and account["id"] == SUB and account["environmentName"] == "corral"

    vnet = az_json(env, "network", "vnet", "create", "-g", RG, "-n", "azvn", "--address-prefixes", "10.80.0.0/16",
                   "--subnet-name", "apps", "--subnet-prefixes", "10.80.0.0/24")
    assert isinstance(vnet, dict) and [s["name"] for s in vnet["newVNet"]["subnets"]] == ["apps"]
    az(env, "network", "nsg", "create", "-g", RG, "-n", "aznsg", "-o", "none")
    rule = az_json(env, "network", "nsg", "rule", "create", "-g", RG, "--nsg-name", "aznsg", "-n", "deny-ssh",
                   "--priority", "100", "--access", "Deny", "--protocol", "Tcp", "--destination-port-ranges", "22")
    assert isinstance(rule, dict) and rule["destinationPortRange"] == "22" and rule["access"] == "Deny"
    sub = az_json(env, "network", "vnet", "subnet", "create", "-g", RG, "--vnet-name", "azvn", "-n", "back",
                  "--address-prefixes", "10.80.1.0/24", "--nsg", "aznsg",
                  "--delegations", "Microsoft.ContainerInstance/containerGroups")
    assert isinstance(sub, dict) and sub["networkSecurityGroup"]["id"].endswith("/networkSecurityGroups/aznsg")
    bad = az(env, "network", "vnet", "subnet", "create", "-g", RG, "--vnet-name", "azvn", "-n", "out",
             "--address-prefixes", "10.99.0.0/24", check=False)
    assert bad.returncode != 0 and "InvalidAddressPrefix" in bad.stderr

    # One create waits for its operation (az follows Azure-AsyncOperation), one returns at once.
    common = ["--image", IMAGE, "--command-line", CMD, "--cpu", "0.5", "--memory", "0.5"]
    t0 = time.monotonic()
    created = az_json(env, "container", "create", "-g", RG, "-n", "plain", *common)
    assert isinstance(created, dict) and created["provisioningState"] == "Succeeded"
    assert time.monotonic() - t0 < 25, "az waited out its 30 s default poll: Retry-After is missing"
    az(env, "container", "create", "-g", RG, "-n", "private", *common, "--vnet", "azvn", "--subnet", "apps",
       "--no-wait")
    plain = wait_running(env, "plain")
    containers = plain["containers"]
    assert isinstance(containers, list)
    assert containers[0]["resources"]["requests"] == {"cpu": 0.5, "memoryInGb": 0.5, "gpu": None}
    private = wait_running(env, "private")
    ip = private["ipAddress"]
    assert isinstance(ip, dict) and ip["type"] == "Private"
    assert ipaddress.ip_address(ip["ip"]) in ipaddress.ip_network("10.80.0.0/24")
    assert isinstance(private["subnetIds"], list)
    assert private["subnetIds"][0]["id"].endswith("/virtualNetworks/azvn/subnets/apps")

    assert "hello-from-az" in az(env, "container", "logs", "-g", RG, "-n", "plain").stdout
    listed = az_json(env, "container", "list", "-g", RG)
    assert isinstance(listed, list) and sorted(g["name"] for g in listed) == ["plain", "private"]
    out = az(env, "container", "exec", "-g", RG, "-n", "private", "--exec-command", "echo exec-ok").stdout
    assert "exec-ok" in out  # no terminal here: az sends no input and prints the output

    for name in ("plain", "private"):
        az(env, "container", "delete", "-g", RG, "-n", name, "--yes", "-o", "none")
    assert az_json(env, "container", "list", "-g", RG) == []

    az(env, "network", "vnet", "delete", "-g", RG, "-n", "azvn")
    az(env, "network", "nsg", "delete", "-g", RG, "-n", "aznsg")
    assert az_json(env, "network", "vnet", "list", "-g", RG) == []


def test_az_container_create_from_a_yaml_file(az_environ: dict[str, str], tmp_path: Path) -> None:
    env = az_environ
    spec = {
        "apiVersion": "2023-05-01", "location": "local", "name": "fromfile", "tags": {"made-by": "az"},
        "type": "Microsoft.ContainerInstance/containerGroups",
        "properties": {
            "osType": "Linux", "restartPolicy": "Always",
            "containers": [{"name": "web", "properties": {
                "image": IMAGE, "command": ["sh", "-c", "echo from-yaml; trap 'exit 0' TERM; sleep 3600 & wait"],
                "environmentVariables": [{"name": "MODE", "value": "yaml"}],
                "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.25}}}}],
            # A Corral extension: az passes the properties through, both ways.
            "placement": {"antiAffinity": [{"tags": {"app": "batch"}, "topologyKey": "node", "required": True}]},
        },
    }
    path = tmp_path / "deploy.yaml"
    path.write_text(yaml.safe_dump(spec))
    created = az_json(env, "container", "create", "-g", RG, "--file", str(path))
    assert isinstance(created, dict) and created["name"] == "fromfile" and created["tags"] == {"made-by": "az"}
    wait_running(env, "fromfile")
    assert "from-yaml" in az(env, "container", "logs", "-g", RG, "-n", "fromfile").stdout
    exported = tmp_path / "exported.yaml"
    az(env, "container", "export", "-g", RG, "-n", "fromfile", "-f", str(exported))
    back = yaml.safe_load(exported.read_text())
    assert back["properties"]["containers"][0]["properties"]["environmentVariables"] == [
        {"name": "MODE", "value": "yaml"}]
    assert back["properties"]["placement"] == spec["properties"]["placement"]
    az(env, "container", "delete", "-g", RG, "-n", "fromfile", "--yes", "-o", "none")


def test_az_container_show_missing_is_not_found(az_environ: dict[str, str]) -> None:
    res = az(az_environ, "container", "show", "-g", RG, "-n", "nope", check=False)
    assert res.returncode != 0 and "ResourceNotFound" in res.stderr



def test_az_network_peering_and_route_tables(az_environ: dict[str, str]) -> None:
    env = az_environ
    net = ["network", "vnet"]
    az(env, *net, "create", "-g", RG, "-n", "azpa", "--address-prefixes", "10.221.0.0/16", "--subnet-name", "apps",
       "--subnet-prefixes", "10.221.0.0/24", "-o", "none")
    az(env, *net, "create", "-g", RG, "-n", "azpb", "--address-prefixes", "10.222.0.0/16", "-o", "none")
    az(env, *net, "create", "-g", RG, "-n", "azpc", "--address-prefixes", "10.221.128.0/17", "-o", "none")
    peer = [*net, "peering", "create", "-g", RG, "--allow-vnet-access"]
    p = az_json(env, *peer, "-n", "a-to-b", "--vnet-name", "azpa", "--remote-vnet", "azpb")
    assert isinstance(p, dict) and p["peeringState"] == "Initiated" and p["allowVirtualNetworkAccess"] is True
    az(env, *peer, "-n", "b-to-a", "--vnet-name", "azpb", "--remote-vnet", "azpa", "-o", "none")
    shown = az_json(env, *net, "peering", "show", "-g", RG, "--vnet-name", "azpa", "-n", "a-to-b")
    assert isinstance(shown, dict) and shown["peeringState"] == "Connected"
    assert shown["peeringSyncLevel"] == "FullyInSync" and shown["remoteVirtualNetwork"]["id"].endswith("/azpb")
    listed = az_json(env, *net, "peering", "list", "-g", RG, "--vnet-name", "azpb")
    assert isinstance(listed, list) and [x["name"] for x in listed] == ["b-to-a"]
    bad = az(env, *peer, "-n", "a-to-c", "--vnet-name", "azpa", "--remote-vnet", "azpc", check=False)
    assert bad.returncode != 0 and "VnetAddressSpacesOverlap" in bad.stderr

    rt = ["network", "route-table"]
    az(env, *rt, "create", "-g", RG, "-n", "azrt", "-o", "none")
    r = az_json(env, *rt, "route", "create", "-g", RG, "--route-table-name", "azrt", "-n", "via-fw",
                "--address-prefix", "10.223.0.0/16", "--next-hop-type", "VirtualAppliance",
                "--next-hop-ip-address", "10.221.0.4")
    assert isinstance(r, dict) and r["nextHopType"] == "VirtualAppliance" and r["nextHopIpAddress"] == "10.221.0.4"
    az(env, *rt, "route", "create", "-g", RG, "--route-table-name", "azrt", "-n", "drop",
       "--address-prefix", "10.224.0.0/16", "--next-hop-type", "None", "-o", "none")
    sub = az_json(env, *net, "subnet", "update", "-g", RG, "--vnet-name", "azpa", "-n", "apps",
                  "--route-table", "azrt")
    assert isinstance(sub, dict) and sub["routeTable"]["id"].endswith("/routeTables/azrt")
    table = az_json(env, *rt, "show", "-g", RG, "-n", "azrt")
    assert isinstance(table, dict) and [s["id"].rsplit("/", 1)[-1] for s in table["subnets"]] == ["apps"]
    assert sorted(x["name"] for x in table["routes"]) == ["drop", "via-fw"]
    busy = az(env, *rt, "delete", "-g", RG, "-n", "azrt", check=False)
    assert busy.returncode != 0 and "InUseRouteTableCannotBeDeleted" in busy.stderr
    sub = az_json(env, *net, "subnet", "update", "-g", RG, "--vnet-name", "azpa", "-n", "apps", "--route-table", "null")
    assert isinstance(sub, dict) and not sub.get("routeTable")
    az(env, *rt, "route", "delete", "-g", RG, "--route-table-name", "azrt", "-n", "drop")
    routes = az_json(env, *rt, "route", "list", "-g", RG, "--route-table-name", "azrt")
    assert isinstance(routes, list) and [x["name"] for x in routes] == ["via-fw"]
    az(env, *rt, "delete", "-g", RG, "-n", "azrt")

    az(env, *net, "peering", "delete", "-g", RG, "--vnet-name", "azpb", "-n", "b-to-a")
    gone = az_json(env, *net, "peering", "show", "-g", RG, "--vnet-name", "azpa", "-n", "a-to-b")
    assert isinstance(gone, dict) and gone["peeringState"] == "Disconnected"
    for name in ("azpa", "azpb", "azpc"):
        az(env, *net, "delete", "-g", RG, "-n", name)


def test_az_container_group_profile_and_a_group_made_from_it(az_environ: dict[str, str]) -> None:
    env = az_environ
    common = ["--image", IMAGE, "--cpu", "0.1", "--memory", "0.1"]
    first = az_json(env, "container", "container-group-profile", "create", "-g", RG, "-n", "azprof", *common,
                    "--command-line", CMD)
    second = az_json(env, "container", "container-group-profile", "create", "-g", RG, "-n", "azprof", *common,
                     "--command-line", CMD.replace("hello-from-az", "hello-again"))
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["revision"] == 1 and second["revision"] == 2
    shown = az_json(env, "container", "container-group-profile", "show", "-g", RG, "-n", "azprof")
    assert isinstance(shown, dict) and shown["containers"][0]["command"][-1].startswith("echo hello-again")
    assert [p["name"] for p in az_json(env, "container", "container-group-profile", "list", "-g", RG)] == ["azprof"]
    revisions = az_json(env, "container", "container-group-profile", "list-revisions", "-g", RG, "-n", "azprof")
    assert [r["revision"] for r in revisions] == [1, 2]  # type: ignore[index,union-attr]
    one = az_json(env, "container", "container-group-profile", "show-revision", "-g", RG, "-n", "azprof", "-r", "1")
    assert isinstance(one, dict) and "hello-from-az" in one["containers"][0]["command"][-1]
    # az names the group's container after the group and sends no image: the profile's container it is.
    made = az_json(env, "container", "create", "-g", RG, "-n", "fromprof", "--container-group-profile-id",
                   first["id"], "--container-group-profile-revision", "1")
    assert isinstance(made, dict) and made["containerGroupProfile"]["revision"] == 1
    assert [c["name"] for c in made["containers"]] == ["azprof"]
    assert made["containers"][0]["resources"]["requests"]["cpu"] == 0.1
    wait_running(env, "fromprof")
    assert "hello-from-az" in az(env, "container", "logs", "-g", RG, "-n", "fromprof").stdout
    az(env, "container", "delete", "-g", RG, "-n", "fromprof", "--yes", "-o", "none")
    az(env, "container", "container-group-profile", "delete", "-g", RG, "-n", "azprof", "--yes")
    assert az_json(env, "container", "container-group-profile", "list", "-g", RG) == []


def test_az_network_lb(az_environ: dict[str, str]) -> None:
    env = az_environ
    created = az_json(env, "network", "lb", "create", "-g", RG, "-n", "azlb", "--sku", "Standard",
                      "--frontend-ip-name", "fe", "--backend-pool-name", "web")
    assert isinstance(created, dict)
    lb = created["loadBalancer"]
    assert [f["name"] for f in lb["frontendIPConfigurations"]] == ["fe"]
    assert [p["name"] for p in lb["backendAddressPools"]] == ["web"]
    pool = az_json(env, "network", "lb", "address-pool", "create", "-g", RG, "--lb-name", "azlb", "-n", "more")
    assert isinstance(pool, dict) and pool["name"] == "more"
    added = az_json(env, "network", "lb", "address-pool", "address", "add", "-g", RG, "--lb-name", "azlb",
                    "--pool-name", "more", "-n", "a1", "--ip-address", "10.9.0.4")
    assert isinstance(added, dict) and added["loadBalancerBackendAddresses"] == [{"ipAddress": "10.9.0.4",
                                                                                  "name": "a1"}]
    az(env, "network", "lb", "probe", "create", "-g", RG, "--lb-name", "azlb", "-n", "http", "--protocol", "Http",
       "--port", "80", "--path", "/", "-o", "none")
    rule = az_json(env, "network", "lb", "rule", "create", "-g", RG, "--lb-name", "azlb", "-n", "web", "--protocol",
                   "Tcp", "--frontend-port", "8099", "--backend-port", "80", "--frontend-ip-name", "fe",
                   "--backend-pool-name", "web", "--probe-name", "http")
    assert isinstance(rule, dict) and rule["frontendPort"] == 8099 and rule["probe"]["id"].endswith("/probes/http")
    shown = az_json(env, "network", "lb", "show", "-g", RG, "-n", "azlb")
    assert isinstance(shown, dict) and [r["name"] for r in shown["loadBalancingRules"]] == ["web"]
    assert shown["frontendIPConfigurations"][0]["loadBalancingRules"][0]["id"].endswith("/loadBalancingRules/web")
    assert [x["name"] for x in az_json(env, "network", "lb", "list", "-g", RG)] == ["azlb"]  # type: ignore[index]
    az(env, "network", "lb", "delete", "-g", RG, "-n", "azlb")
    assert az_json(env, "network", "lb", "list", "-g", RG) == []
