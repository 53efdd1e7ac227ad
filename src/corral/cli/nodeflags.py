"""The flags `corral up` and `corral agent` share: what the node registers with (placement attributes, capacity)."""

from __future__ import annotations

import typer

ZONE = typer.Option(None, "--zone", help="This node's failure domain (a group's `zones`, zone spread).")
LABELS = typer.Option([], "--labels", help="k=v[,k=v]: labels a group's node selector matches (repeatable).")
CPU = typer.Option(None, "--cpu", help="CPU cores this node offers the scheduler (default: all of the machine's; "
                                       "agents sharing a machine each offer their part).")
MEMORY = typer.Option(None, "--memory", help="Memory GB this node offers the scheduler (default: all of the "
                                             "machine's).")


def parse_labels(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        for part in item.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k.strip():
                raise typer.BadParameter(f"'{part}' is not KEY=VALUE", param_hint="--labels")
            out[k.strip()] = v.strip()
    return out


def settings_error(exc: Exception) -> str:
    """A pydantic ValidationError of the node's settings as one line naming the flags."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    return "; ".join(e["msg"].removeprefix("Value error, ") for e in errors())
