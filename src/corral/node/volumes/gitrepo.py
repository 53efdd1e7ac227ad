"""gitRepo volumes: `git clone` (then check out a revision) into a temp dir, renamed into place."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from corral.errors import VolumeError
from corral.node.volumes.spec import GitRepoSpec

GIT_TIMEOUT = 300.0


def _git(what: str, args: list[str], cwd: Path | None = None) -> None:
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",  # never wait on a credential prompt
        "GIT_ASKPASS": "/bin/true",
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": "/nonexistent",  # no user config, no credential helpers
    }
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise VolumeError(f"git {what} took longer than {GIT_TIMEOUT:.0f}s") from None
    except FileNotFoundError:
        raise VolumeError("git is not installed on this node") from None
    if proc.returncode != 0:
        raise VolumeError(f"git {what} failed: {proc.stderr.strip()[-500:]}")


def default_directory(repository: str) -> str:
    """The directory `git clone` would pick: the last path component without `.git`."""
    name = repository.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if name.endswith(".git"):
        name = name[:-4]
    if not name or name in (".", ".."):
        raise VolumeError(f"cannot derive a directory name from repository {repository!r}; set directory")
    return name


def clone(spec: GitRepoSpec, volume_dir: Path) -> None:
    """Make `volume_dir` hold the repository (ACI/Kubernetes gitRepo semantics); idempotent.

    directory "." -> the volume is the work tree; "x" -> the work tree is volume/x;
    unset -> volume/<repository name>, as `git clone` names it.
    """
    if volume_dir.is_dir():
        return  # renamed into place only when complete
    volume_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=volume_dir.parent, prefix=f".{volume_dir.name}."))
    try:
        os.chmod(work, 0o755)
        sub = "." if spec.directory == "." else spec.directory or default_directory(spec.repository)
        tree = work if sub == "." else work / sub
        tree.parent.mkdir(parents=True, exist_ok=True)
        _git("clone", ["clone", "--quiet", "--no-hardlinks", "--", spec.repository, str(tree)])
        if spec.revision:
            _git(f"checkout of {spec.revision}",
                 ["-c", "advice.detachedHead=false", "checkout", "--quiet", spec.revision, "--"], cwd=tree)
        os.rename(work, volume_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
