"""VolumeSpec: an ACI `volumes[]` entry, validated for what the node does with it."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from corral.model.group import SecretPermissions

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_SHARE = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
KINDS = ("emptyDir", "secret", "gitRepo", "azureFile")


class _Wire(BaseModel):
    # The API's models may carry extra ACI fields; the node ignores what it does not use.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AzureFileSpec(_Wire):
    shareName: str
    storageAccountName: str
    readOnly: bool = False
    storageAccountKey: str | None = None

    @field_validator("shareName")
    @classmethod
    def _share(cls, v: str) -> str:
        if not _SHARE.match(v):
            raise ValueError("shareName must be 3-63 lowercase letters, digits and single hyphens")
        return v

    @field_validator("storageAccountName")
    @classmethod
    def _account(cls, v: str) -> str:
        if not _ACCOUNT.match(v):
            raise ValueError("storageAccountName must be 3-24 lowercase letters and digits")
        return v

    @property
    def share(self) -> str:
        """The node's share name: `<storageAccountName>/<shareName>`."""
        return f"{self.storageAccountName}/{self.shareName}"


class GitRepoSpec(_Wire):
    repository: str
    directory: str | None = None
    revision: str | None = None

    @field_validator("repository")
    @classmethod
    def _repository(cls, v: str) -> str:
        if not v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError("repository must be a git URL or path, not starting with '-' and without spaces")
        return v

    @field_validator("directory")
    @classmethod
    def _directory(cls, v: str | None) -> str | None:
        if v is None or v == ".":
            return v
        parts = v.split("/")
        if not v or v.startswith("/") or ".." in parts or "" in parts or v.startswith("-"):
            raise ValueError("directory must be '.', or a relative path without '..' or empty parts")
        return v

    @field_validator("revision")
    @classmethod
    def _revision(cls, v: str | None) -> str | None:
        if v is not None and (not v or v.startswith("-") or any(c.isspace() for c in v)):
            raise ValueError("revision must be a commit, branch or tag name, not starting with '-'")
        return v


class VolumeSpec(_Wire):
    """Exactly one of emptyDir, secret, gitRepo, azureFile, as in ACI.

    secret values are base64 (ACI sends them so); each key becomes a file name.
    """

    name: str
    emptyDir: dict[str, Any] | None = None
    secret: dict[str, str] | None = None
    gitRepo: GitRepoSpec | None = None
    azureFile: AzureFileSpec | None = None
    secretPermissions: SecretPermissions | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("volume name must be 1-63 lowercase letters, digits and '-', "
                             "starting and ending with a letter or digit")
        return v

    @field_validator("secret")
    @classmethod
    def _secret(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is None:
            return v
        for key, value in v.items():
            if not key or "/" in key or key in (".", "..") or "\0" in key:
                raise ValueError(f"secret key {key!r} is not a valid file name")
            try:
                base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"secret value for {key!r} is not valid base64") from None
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> VolumeSpec:
        kinds = [k for k in KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"volume {self.name!r} needs exactly one of emptyDir, secret, gitRepo, "
                             f"azureFile (got {', '.join(kinds) or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if getattr(self, k) is not None)

    @property
    def read_only(self) -> bool:
        """Whether containers must mount it read-only regardless of their volumeMount (secrets, RO shares)."""
        return self.secret is not None or (self.azureFile is not None and self.azureFile.readOnly)

    def secret_files(self) -> dict[str, bytes]:
        return {k: base64.b64decode(v) for k, v in (self.secret or {}).items()}

    def secret_file_mode(self, name: str) -> tuple[int, int | None]:
        """(mode, owning group) of a secret file: 0400 and root's unless secretPermissions say otherwise; a
        group gets read access (as Kubernetes' fsGroup)."""
        perms = self.secretPermissions or SecretPermissions()
        mode = (perms.modes or {}).get(name, perms.defaultMode if perms.defaultMode is not None else 0o400)
        return (mode | 0o440, perms.group) if perms.group is not None else (mode, None)
