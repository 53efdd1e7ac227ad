"""The flags `corral up`, `corral agent` and `corral server` share: what the node registers with (placement
attributes, capacity), and the scheduler's strategy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:  # imported when a command runs (`corral` starts faster)
    from corral.scheduler.pipeline import SchedulerSettings

ZONE = typer.Option(None, "--zone", help="This node's failure domain (a group's `zones`, zone spread).")
LABELS = typer.Option([], "--labels", help="k=v[,k=v]: labels a group's node selector matches (repeatable).")
CPU = typer.Option(None, "--cpu", help="CPU cores this node offers the scheduler (default: all of the machine's; "
                                       "agents sharing a machine each offer their part).")
MEMORY = typer.Option(None, "--memory", help="Memory GB this node offers the scheduler (default: all of the "
                                             "machine's).")

WARM_CONTAINERS = typer.Option(0, "--warm-containers", min=0, max=16,
                               help="Warm containers kept per recently started image: a group of one plain "
                                    "container starts in one without waiting for crun (docs/performance.md).")


SCHEDULING = typer.Option("spread", "--scheduling",
                          help="Placement: spread (the least allocated node) or binpack (the busiest that fits).")


def scheduler_settings(strategy: str) -> SchedulerSettings:
    """--scheduling as the scheduler's settings."""
    from corral.scheduler.pipeline import SchedulerSettings

    if strategy not in ("spread", "binpack"):
        raise typer.BadParameter("spread or binpack", param_hint="--scheduling")
    return SchedulerSettings(strategy=strategy)  # type: ignore[arg-type]


def settings_error(exc: Exception) -> str:
    """A pydantic ValidationError of the node's settings as one line naming the flags."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    return "; ".join(e["msg"].removeprefix("Value error, ") for e in errors())
