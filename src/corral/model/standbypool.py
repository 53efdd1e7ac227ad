"""Standby container group pools (``Microsoft.StandbyPool/standbyContainerGroupPools``).

A pool keeps ``maxReadyCapacity`` groups of a profile revision created and ready;
a container group created with ``standbyPoolProfile {id}`` takes one over instead
of starting cold. The orchestrator keeps the pool filled through the API (its
groups carry the ``corral-standby-pool`` tag); the take-over itself is one store
transaction in the control plane.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from corral.model.armids import PROFILE_TYPE, parse_resource_id
from corral.model.group import Wire
from corral.model.records import StoredRecord


class PoolProfileRef(Wire):
    id: str
    revision: int | None = Field(default=None, ge=1)

    @field_validator("id")
    @classmethod
    def _profile(cls, v: str) -> str:
        parse_resource_id(v, PROFILE_TYPE)
        return v


class PoolSubnet(Wire):
    id: str


class PoolGroupProperties(Wire):
    containerGroupProfile: PoolProfileRef
    subnetIds: list[PoolSubnet] | None = None


class ElasticityProfile(Wire):
    maxReadyCapacity: int = Field(ge=0, le=1000)
    refillPolicy: Literal["always"] = "always"
    dynamicSizing: dict[str, Any] | None = None

    @field_validator("refillPolicy", mode="before")
    @classmethod
    def _case(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class PoolProperties(Wire):
    elasticityProfile: ElasticityProfile
    containerGroupProperties: PoolGroupProperties
    zones: list[str] | None = None


class StandbyPool(Wire):
    location: str | None = None
    tags: dict[str, str] | None = None
    properties: PoolProperties


class PoolMeta(BaseModel):
    uid: str
    subscription: str
    resourceGroup: str
    name: str
    createdAt: datetime
    revision: int  # the profile revision resolved at PUT time


class PoolRecord(StoredRecord):
    spec: StandbyPool
    meta: PoolMeta
