"""ARM routes of ``Microsoft.ContainerInstance/containerGroupProfiles``: synchronous PUT, revisions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.api.render import strip_secrets
from corral.control.profiles import ProfileService
from corral.model.armids import PROFILE_TYPE, resource_id
from corral.model.group import TagsPatch
from corral.model.profile import ProfileRecord, ProfileSpec, RevisionRecord, clean_profile_body

router = APIRouter(dependencies=[Depends(api_version)])

RG = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroupProfiles"
P = RG + "/{name}"


def profiles(request: Request) -> ProfileService:
    return request.app.state.plane.orchestration.profiles


def _dt(v: Any) -> str:
    return v.isoformat().replace("+00:00", "Z")


def render_profile(record: ProfileRecord, rev: RevisionRecord | None = None) -> dict[str, Any]:
    """The profile as ARM shows it; with ``rev``, that revision's content under the profile's id."""
    m = record.meta
    spec = (rev.spec if rev else record.spec).model_dump(mode="json", exclude_none=True)
    props = spec["properties"]
    strip_secrets(props)
    props["revision"] = rev.revision if rev else m.revision
    props["registeredRevisions"] = list(m.revisions)
    out: dict[str, Any] = {
        "id": resource_id(m.subscription, m.resourceGroup, PROFILE_TYPE, m.name), "name": m.name,
        "type": PROFILE_TYPE, "location": spec.get("location"), "tags": record.spec.tags or {},
        "properties": props,
        "systemData": {"createdAt": _dt(m.createdAt), "lastModifiedAt": _dt(rev.createdAt if rev else m.createdAt)},
    }
    if spec.get("zones"):
        out["zones"] = spec["zones"]
    return out


@router.put(P)
def put(sub: str, rg: str, name: str, body: dict[str, Any] = Depends(json_body),
        svc: ProfileService = Depends(profiles)) -> Response:
    record, created = svc.put(sub, rg, name, ProfileSpec.model_validate(clean_profile_body(body)))
    return JSONResponse(render_profile(record), status_code=201 if created else 200)


@router.patch(P)
def patch(sub: str, rg: str, name: str, body: dict[str, Any] = Depends(json_body),
          svc: ProfileService = Depends(profiles)) -> Any:
    return render_profile(svc.update_tags(sub, rg, name, TagsPatch.model_validate(body).tags))


@router.get(P)
def get(sub: str, rg: str, name: str, svc: ProfileService = Depends(profiles)) -> Any:
    return render_profile(svc.get(sub, rg, name))


@router.get(RG)
def list_in_group(sub: str, rg: str, svc: ProfileService = Depends(profiles)) -> Any:
    return {"value": [render_profile(r) for r in svc.list(sub, rg)]}


@router.get("/subscriptions/{sub}/providers/Microsoft.ContainerInstance/containerGroupProfiles")
def list_in_subscription(sub: str, svc: ProfileService = Depends(profiles)) -> Any:
    return {"value": [render_profile(r) for r in svc.list(sub)]}


@router.delete(P)
def delete(sub: str, rg: str, name: str, svc: ProfileService = Depends(profiles)) -> Response:
    return Response(status_code=200 if svc.delete(sub, rg, name) else 204)


@router.get(P + "/revisions")
def list_revisions(sub: str, rg: str, name: str, svc: ProfileService = Depends(profiles)) -> Any:
    record = svc.get(sub, rg, name)
    return {"value": [render_profile(record, r) for r in svc.revisions(sub, rg, name)]}


@router.get(P + "/revisions/{revision}")
def get_revision(sub: str, rg: str, name: str, revision: int, svc: ProfileService = Depends(profiles)) -> Any:
    return render_profile(svc.get(sub, rg, name), svc.revision(sub, rg, name, revision))
