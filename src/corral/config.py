"""Where things live by default, and the client config that `corral up` writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel

DEFAULT_DATA_DIR = Path("/var/lib/corral")
DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


def client_config_path() -> Path:
    """``$CORRAL_CONFIG`` if set, else ``~/.config/corral/config.json``."""
    env = os.environ.get("CORRAL_CONFIG")
    if env:
        return Path(env)
    return Path(os.path.expanduser("~")) / ".config" / "corral" / "config.json"


class ClientConfig(BaseModel):
    endpoint: str
    token: str
    ca_cert: str | None = None  # path of the CA that signed the server certificate (HTTPS only)
    subscription: str = DEFAULT_SUBSCRIPTION
    location: str = "local"

    def write(self, path: Path | None = None) -> Path:
        path = path or client_config_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.model_dump(), indent=2) + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | None = None) -> ClientConfig:
        path = path or client_config_path()
        return cls.model_validate_json(path.read_text())
