"""The `corral` command."""

from __future__ import annotations

import sys

import typer

from corral.cli import container, image, lb, network, ngroup, node, profile, share, standbypool, storage
from corral.cli.azlogin import az_login_command
from corral.cli.kube import kube_node
from corral.cli.output import err_console
from corral.cli.server import agent, server
from corral.cli.up import up
from corral.cli.usage import usage
from corral.errors import CorralError

app = typer.Typer(help="Corral: serverless container groups on your own machines.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.command("up")(up)
app.command("server")(server)
app.command("agent")(agent)
app.command("usage")(usage)
app.command("az-login")(az_login_command)
app.command("kube-node")(kube_node)
app.add_typer(container.app, name="container")
app.add_typer(image.app, name="image")
app.add_typer(node.app, name="node")
app.add_typer(network.app, name="network")
app.add_typer(share.app, name="share")
app.add_typer(storage.app, name="storage")
app.add_typer(profile.app, name="profile")
app.add_typer(ngroup.app, name="ngroup")
app.add_typer(lb.app, name="lb")
app.add_typer(standbypool.app, name="standby-pool")


def main() -> None:
    try:
        app()
    except CorralError as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        sys.exit(1)


if __name__ == "__main__":
    main()
