"""Helpers for tests and demos that need a runnable rootfs without the image store."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

BUSYBOX = "/bin/busybox"


def make_busybox_rootfs(dest: Path, busybox: str = BUSYBOX) -> Path:
    """A minimal rootfs: static busybox, its applet links, /etc/passwd and /etc/group."""
    bindir = dest / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, bindir / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for name in applets:
        link = bindir / name
        if name != "busybox" and not link.exists():
            link.symlink_to("busybox")
    for d in ("proc", "sys", "dev", "tmp", "etc", "root", "home/app", "var/run"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    dest.chmod(0o755)  # temp dirs are 0700: non-root container users must still traverse /
    (dest / "tmp").chmod(0o1777)
    os.chown(dest / "home" / "app", 1000, 1000)
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/:/bin/false\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n")
    return dest
