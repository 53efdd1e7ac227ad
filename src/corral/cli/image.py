"""`corral image ...`: the node's image cache (run on the node, as root)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from corral.cli.output import Format, console, emit
from corral.config import DEFAULT_DATA_DIR

if TYPE_CHECKING:  # the node's image code is imported by the commands that use it (`corral` starts faster)
    from corral.node.images.store import Image, ImageStore, RegistryCredential

app = typer.Typer(help="Manage the node's image cache.", no_args_is_help=True)

DATA = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Corral's data directory on this node.")
USER = typer.Option(None, "--username", "-u", help="Registry user name.")
PASSWORD = typer.Option(None, "--password", "-p", help="Registry password or token.")


def _store(data_dir: Path) -> ImageStore:
    from corral.node.images.store import ImageStore

    return ImageStore(data_dir / "images")


def _creds(ref: str, username: str | None, password: str | None) -> list[RegistryCredential]:
    if not username:
        return []
    from corral.node.images.reference import ImageReference
    from corral.node.images.store import RegistryCredential

    return [RegistryCredential(server=ImageReference.parse(ref).registry, username=username, password=password)]


def _row(img: Image) -> tuple[str, str, str, str]:
    return img.reference, img.digest[:19], f"{img.size / 1e6:.1f} MB", str(img.created or "")


def _table(images: list[Image]) -> Table:
    t = Table(show_edge=False)
    for col in ("Reference", "Digest", "Size", "Created"):
        t.add_column(col)
    for img in images:
        t.add_row(*_row(img))
    return t


@app.command()
def pull(
    reference: str, data_dir: Path = DATA, username: str | None = USER, password: str | None = PASSWORD
) -> None:
    """Pull an image from a registry into the node cache."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    store = _store(data_dir)
    if console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console) as bar:
            tasks: dict[str, int] = {}

            def progress(layer: str, done: int, total: int) -> None:
                if layer not in tasks:
                    tasks[layer] = bar.add_task(layer.removeprefix("sha256:")[:12], total=total or None)
                bar.update(tasks[layer], completed=done)

            img = store.pull(reference, _creds(reference, username, password), progress=progress)
    else:
        img = store.pull(reference, _creds(reference, username, password))
    console.print(f"pulled {img.reference} ({img.digest})")


@app.command("list")
def list_(data_dir: Path = DATA, output: Format = typer.Option(Format.table, "-o", "--output")) -> None:
    """List the images in the node cache."""
    images = _store(data_dir).list()
    emit([i.model_dump(mode="json") for i in images], output, _table(images))


@app.command()
def rm(reference: str, data_dir: Path = DATA) -> None:
    """Remove an image from the node cache (layers still in use stay)."""
    _store(data_dir).remove(reference)
    console.print(f"removed {reference}")


@app.command("import")
def import_(
    archive: Path, reference: str | None = typer.Option(None, "--reference", "-r", help="Tag to store it under."),
    data_dir: Path = DATA,
) -> None:
    """Load an OCI archive or docker-archive tarball into the node cache."""
    for img in _store(data_dir).import_archive(archive, reference):
        console.print(f"imported {img.reference} ({img.digest})")


@app.command()
def push(
    reference: str, destination: str, data_dir: Path = DATA,
    username: str | None = USER, password: str | None = PASSWORD,
) -> None:
    """Push a cached image to a registry."""
    digest = _store(data_dir).push(reference, destination, _creds(destination, username, password))
    console.print(f"pushed {destination} ({digest})")


@app.command("build-base")
def build_base(
    reference: str = typer.Option("corral/busybox:latest", "--reference", "-r"), data_dir: Path = DATA
) -> None:
    """Build a small busybox image (sh, httpd, wget, nc) into the node cache."""
    from corral.node.images.build import build_base_image

    img = build_base_image(_store(data_dir), reference)
    console.print(f"built {img.reference} ({img.digest})")
