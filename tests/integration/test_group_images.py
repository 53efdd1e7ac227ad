"""Groups get their images from the node cache, or pull them from a registry with the group's credentials."""

from __future__ import annotations

from pathlib import Path

from corral_server import CorralServer
from groups import container, delete, get, group, put, wait_for
from registry import run_registry

RG = "it-images"


def test_cached_image_starts_without_a_pull(corral: CorralServer) -> None:
    client = corral.client()
    g = put(client, RG, "cached", group(container("cached", ["sleep", "3600"])))
    try:
        names = [e["name"] for e in g["properties"]["instanceView"]["events"]]
        assert "Pulling" not in names
        cached = client.request(
            "GET", f"/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/locations/local/cachedImages"
        ).json()["value"]
        assert {"osType": "Linux", "image": "docker.io/corral/busybox:latest"} in cached
    finally:
        delete(client, RG, "cached")


def test_private_registry_pull_with_group_credentials(corral: CorralServer, tmp_path: Path) -> None:
    client = corral.client()
    with run_registry(tmp_path, users={"puller": "s3cret-pw"}) as reg:
        ref = f"{reg.host_port}/team/app:v1"
        corral.cli("image", "push", "corral/busybox:latest", ref, "--data-dir", str(corral.data_dir),
                   "-u", "puller", "-p", "s3cret-pw")

        bad = group(container("app", ["sleep", "3600"], image=ref),
                    imageRegistryCredentials=[{"server": reg.host_port, "username": "puller", "password": "nope"}])
        resp = client.request("PUT", client.group_path(RG, "private-bad"), json=bad)
        result = client.wait_operation(resp, timeout=60)
        assert result["status"] == "Failed"
        assert reg.host_port in result["error"]["message"]
        g = get(client, RG, "private-bad")
        assert g["properties"]["provisioningState"] == "Failed"
        assert "password" not in g["properties"]["imageRegistryCredentials"][0]
        delete(client, RG, "private-bad")

        good = group(container("app", ["sh", "-c", "echo pulled; sleep 3600"], image=ref),
                     imageRegistryCredentials=[{"server": reg.host_port, "username": "puller",
                                                "password": "s3cret-pw"}])
        g = put(client, RG, "private", good)
        try:
            assert g["properties"]["instanceView"]["state"] == "Running"
            events = [e["name"] for e in g["properties"]["instanceView"]["events"]]
            assert "Pulled" in events
            assert "password" not in g["properties"]["imageRegistryCredentials"][0]
            wait_for(client, RG, "private", lambda g: g["properties"]["containers"][0]["properties"]
                     ["instanceView"]["currentState"]["state"] == "Running")
        finally:
            delete(client, RG, "private")
