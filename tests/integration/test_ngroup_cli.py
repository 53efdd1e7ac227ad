"""The `corral profile|lb|ngroup|standby-pool` verbs against a real server: a profile, a load balancer, an
NGroup from a YAML file, a scale, a rollout with history and undo, a standby pool and a group taken from it.

The verbs run in this process (typer's runner: the real command code, without a new interpreter and its
imports for each of the dozen calls).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from corral_server import CorralServer, free_port
from orchestration import fetch, wait_until
from typer.testing import CliRunner

from corral.cli.main import app

RG = "corcli"
WEB = "mkdir -p /www && echo {page} > /www/index.html && trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"


class Cli:
    def __init__(self, server: CorralServer) -> None:
        self.env = {"CORRAL_CONFIG": str(server.config_path)}
        self.runner = CliRunner()

    def __call__(self, *args: str, check: bool = True) -> str:
        res = self.runner.invoke(app, list(args), env=self.env)
        if check and res.exit_code != 0:
            raise AssertionError(f"corral {' '.join(args)} failed ({res.exit_code}): {res.output} {res.exception!r}")
        return res.output

    def json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self(*args, "-o", "json"))


def test_cli_verbs(corral: CorralServer, tmp_path: Path) -> None:
    cli = Cli(corral)
    try:
        _run(corral, cli, tmp_path)
    finally:
        cli("ngroup", "delete", "-g", RG, "-n", "shop", "-y", "--no-wait", check=False)
        cli("standby-pool", "delete", "-g", RG, "-n", "warm", "-y", check=False)
        cli("container", "delete", "-g", RG, "-n", "taken", "-y", check=False)


def _run(corral: CorralServer, cli: Cli, tmp_path: Path) -> None:
    for page in ("one", "two"):
        p = cli.json("profile", "create", "-g", RG, "-n", "shop", "--image", "corral/busybox:latest", "--cpu", "0.1",
              "--memory", "0.1", "--ports", "80", "--command-line", f'sh -c "{WEB.format(page=page)}"')
    assert p["properties"]["revision"] == 2 and p["properties"]["registeredRevisions"] == [1, 2]
    assert "Revisions" in cli("profile", "revisions", "-g", RG, "-n", "shop")
    one = cli.json("profile", "show", "-g", RG, "-n", "shop", "--revision", "1")
    assert "echo one" in one["properties"]["containers"][0]["properties"]["command"][-1]

    port = free_port()
    lb = cli.json("lb", "create", "-g", RG, "-n", "shoplb", "--frontend-port", str(port), "--backend-port", "80",
           "--pool", "web", "--probe-path", "/", "--drain-period", "1")
    assert lb["properties"]["loadBalancingRules"][0]["properties"]["frontendPort"] == port

    doc = {"name": "shop", "location": "local", "properties": {
        "elasticProfile": {"desiredCount": 2, "maintainDesiredCount": True},
        "containerGroupProfiles": [{
            "resource": {"id": one["id"]}, "revision": 1,
            "networkProfile": {"loadBalancer": {"backendAddressPools": [
                {"resource": {"id": lb["properties"]["backendAddressPools"][0]["id"]}}]}}}],
        "updateProfile": {"updateMode": "Rolling", "rollingUpdateProfile": {"maxBatchPercent": 50}}}}
    (tmp_path / "shop.yaml").write_text(yaml.safe_dump(doc))
    out = cli("ngroup", "create", "-g", RG, "--file", str(tmp_path / "shop.yaml"))
    assert "shop" in out and "Succeeded" in out
    assert fetch(port) == "one"
    ng = cli.json("ngroup", "scale", "-g", RG, "-n", "shop", "--count", "3")
    assert ng["properties"]["elasticProfile"]["desiredCount"] == 3
    assert ng["properties"]["status"]["readyCount"] == 3

    cli("ngroup", "update", "-g", RG, "-n", "shop", "--revision", "2")
    assert fetch(port) == "two"
    status = cli("ngroup", "rollout", "status", "-g", RG, "-n", "shop")
    assert "1 -> 2: Complete" in status
    history = cli.json("ngroup", "rollout", "history", "-g", RG, "-n", "shop")
    assert [(h["revision"], h["result"]) for h in history] == [(1, "Complete"), (2, "Complete")]
    cli("ngroup", "rollout", "undo", "-g", RG, "-n", "shop")
    wait_until("revision 1 again", lambda: all(fetch(port) == "one" for _ in range(5)), timeout=30)
    assert "shop" in cli("ngroup", "list", "-g", RG)

    pool = cli.json("standby-pool", "create", "-g", RG, "-n", "warm", "--profile", "shop", "--capacity", "1")
    client = corral.client()

    def ready() -> bool:
        view = client.request("GET", pool["id"] + "/runtimeViews/latest").json()
        return {"state": "Running", "count": 1} in view["properties"]["instanceCountSummary"][0][
            "instanceCountsByState"]
    wait_until("a ready pooled group", ready, timeout=60)
    assert "warm" in cli("standby-pool", "list", "-g", RG)
    taken = cli.json("container", "create", "-g", RG, "-n", "taken", "--container-group-profile-id", one["id"],
              "--container-group-profile-revision", "2", "--standby-pool-profile-id", pool["id"])
    assert taken["properties"]["isCreatedFromStandbyPool"] is True
    assert taken["properties"]["instanceView"]["state"] == "Running"
