"""`corral az-login`: point the real Azure CLI (`az`) at Corral and log it in.

The wiring, in one place:

- the cloud: `az cloud register --name corral --endpoint-resource-manager <endpoint>/` reads Corral's
  ``/metadata/endpoints``; `az cloud set --name corral` makes it the active cloud;
- trust: ``REQUESTS_CA_BUNDLE`` (and ``WEBSOCKET_CLIENT_CA_BUNDLE``, for exec) name the CA of the client
  config (az insists on HTTPS);
- identity: ``IDENTITY_ENDPOINT`` (Corral's token endpoint) and ``IDENTITY_HEADER`` (the installation
  token) make MSAL fetch a token the App Service way; `az login --identity` then lists the subscription.

az fetches a token on every command, so these variables must be set for every `az` call, not only
for the login: ``eval "$(corral az-login --print-env)"`` exports them in a shell.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import typer

import corral
from corral.cli.output import console
from corral.config import ClientConfig
from corral.errors import CorralError

CLOUD_NAME = "corral"
# `make test` installs az here (its own virtualenv: its azure-mgmt pins differ from the project's).
REPO_AZ = Path(corral.__file__).resolve().parents[2] / ".venv-az" / "bin" / "az"


class AzLoginError(CorralError):
    code = "AzLoginFailed"
    status = 400


def az_env(cfg: ClientConfig) -> dict[str, str]:
    """The environment every `az` call against this Corral needs (add it to the caller's)."""
    from corral.api.identity import TOKEN_PATH  # the API's route (imported here: `corral` starts faster)

    if not cfg.endpoint.startswith("https://") or not cfg.ca_cert:
        raise AzLoginError(f"az needs HTTPS, but the client config's endpoint is {cfg.endpoint}: "
                           "start Corral without --insecure-http")
    return {
        "REQUESTS_CA_BUNDLE": cfg.ca_cert,
        # `az container exec` opens its wss:// session with websocket-client, which reads its own variable.
        "WEBSOCKET_CLIENT_CA_BUNDLE": cfg.ca_cert,
        "IDENTITY_ENDPOINT": cfg.endpoint.rstrip("/") + TOKEN_PATH,
        "IDENTITY_HEADER": cfg.token,
        # Corral is a private cloud: az's usage telemetry would only try to reach Microsoft.
        "AZURE_CORE_COLLECT_TELEMETRY": "no",
    }


def find_az(explicit: str | None = None) -> str:
    for candidate in (explicit, shutil.which("az"), str(REPO_AZ) if REPO_AZ.exists() else None):
        if candidate:
            return candidate
    raise AzLoginError(f"the Azure CLI was not found: install it (`make az`, into {REPO_AZ.parent.parent}), "
                       "put `az` on PATH, or pass --az PATH")


def _run(az: str, args: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([az, *args], env=dict(env), capture_output=True, text=True, timeout=120)


def az_login(cfg: ClientConfig, az: str, base_env: Mapping[str, str], cloud: str = CLOUD_NAME) -> list[str]:
    """Register (or update) the cloud, make it active and log in with Corral's identity; the commands run."""
    env = {**base_env, **az_env(cfg)}
    arm = cfg.endpoint.rstrip("/") + "/"
    done: list[str] = []

    def step(args: list[str]) -> subprocess.CompletedProcess[str]:
        res = _run(az, args, env)
        done.append("az " + shlex.join(args))
        return res

    def check(res: subprocess.CompletedProcess[str]) -> None:
        if res.returncode != 0:
            raise AzLoginError(f"`{done[-1]}` failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")

    reg = step(["cloud", "register", "--name", cloud, "--endpoint-resource-manager", arm])
    if reg.returncode != 0 and "already registered" in reg.stderr:
        # The endpoint may have moved (another --listen): refresh the registration from the metadata.
        reg = step(["cloud", "update", "--name", cloud, "--endpoint-resource-manager", arm])
    check(reg)
    check(step(["cloud", "set", "--name", cloud]))
    check(step(["login", "--identity", "--output", "none"]))
    return done


def export_lines(cfg: ClientConfig) -> list[str]:
    return [f"export {k}={shlex.quote(v)}" for k, v in az_env(cfg).items()]


def az_login_command(
    az: str | None = typer.Option(None, "--az", help="The az executable (default: az on PATH, else .venv-az)."),
    cloud: str = typer.Option(CLOUD_NAME, "--cloud-name", help="Name of the cloud registered in az."),
    print_env: bool = typer.Option(False, "--print-env", help="Only print the exports every az call needs "
                                   "(for `eval \"$(corral az-login --print-env)\"`)."),
) -> None:
    """Register Corral as a cloud in the Azure CLI and log az in with Corral's identity."""
    cfg = ClientConfig.load()
    if print_env:
        print("\n".join(export_lines(cfg)))
        return
    exe = find_az(az)
    for command in az_login(cfg, exe, os.environ, cloud):
        console.print(f"ran: {command}", highlight=False, markup=False, soft_wrap=True)
    secret_free = [line.split("=", 1)[0] + "=..." if "IDENTITY_HEADER" in line else line
                   for line in export_lines(cfg)]
    console.print(f"az ({exe}) is logged in to {cfg.endpoint} as cloud '{cloud}'. Every az command needs:",
                  highlight=False, markup=False, soft_wrap=True)
    for line in secret_free:
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    console.print('set them in this shell with:  eval "$(corral az-login --print-env)"', highlight=False,
                  markup=False, soft_wrap=True)
