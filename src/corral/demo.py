"""The demo `make run` deploys: a web page from busybox httpd on a public port."""

from __future__ import annotations

from corral.cli.client import Client
from corral.cli.output import console
from corral.config import ClientConfig
from corral.node.images.build import build_base_image
from corral.node.images.store import ImageStore

DEMO_IMAGE = "corral/busybox:latest"
DEMO_RG = "demo"
DEMO_NAME = "hello"


def demo_group(port: int) -> dict:
    return {
        "properties": {
            "containers": [{
                "name": "web",
                "properties": {
                    "image": DEMO_IMAGE,
                    "command": ["httpd", "-f", "-v", "-p", "80", "-h", "/var/www"],
                    "ports": [{"port": 80}],
                    "resources": {"requests": {"cpu": 0.25, "memoryInGB": 0.25}},
                },
            }],
            "ipAddress": {"type": "Public", "ports": [{"port": 80, "publicPort": port}]},
            "restartPolicy": "Always",
        }
    }


def deploy_demo(images: ImageStore, config: ClientConfig, port: int) -> None:
    if images.get(DEMO_IMAGE) is None:
        console.print(f"building the demo image {DEMO_IMAGE} from busybox-static...")
        build_base_image(images, DEMO_IMAGE)
    client = Client(config)
    path = client.group_path(DEMO_RG, DEMO_NAME)
    resp = client.request("PUT", path, json=demo_group(port))
    result = client.wait_operation(resp, timeout=120)
    if result.get("status") != "Succeeded":
        console.print(f"[red]the demo group did not start:[/red] {result}")
        return
    group = client.request("GET", path).json()
    ip = group["properties"]["ipAddress"]["ip"]
    console.print(f"""
[bold green]Demo group '{DEMO_NAME}' is running.[/bold green]
  Open:    http://{ip}:{port}/
  Look:    .venv/bin/corral container show -g {DEMO_RG} -n {DEMO_NAME}
           .venv/bin/corral container logs -g {DEMO_RG} -n {DEMO_NAME} --timestamps
           .venv/bin/corral container exec -g {DEMO_RG} -n {DEMO_NAME} --exec-command "ps"
           .venv/bin/corral container list
  Remove:  .venv/bin/corral container delete -g {DEMO_RG} -n {DEMO_NAME} -y
Ctrl-C stops Corral (containers keep running and are adopted on the next start).
""")
