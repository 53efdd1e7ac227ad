"""ARM-shaped error responses: ``{"error": {"code", "message", "target"?, "details"?}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from corral.errors import CorralError


def error_body(code: str, message: str, target: str | None = None, details: list[dict[str, Any]] | None = None):
    err: dict[str, Any] = {"code": code, "message": message}
    if target:
        err["target"] = target
    if details:
        err["details"] = details
    return {"error": err}


def _field(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        if p in ("body",):
            continue
        if isinstance(p, int):
            parts[-1:] = [f"{parts[-1]}[{p}]"] if parts else [f"[{p}]"]
        elif isinstance(p, str) and not p.startswith(("function-", "function_")):
            parts.append(p)
    return ".".join(parts)


def validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    details = []
    for e in errors:
        msg = e["msg"].removeprefix("Value error, ")
        field = _field(tuple(e["loc"]))
        if e["type"] == "missing":
            msg = "is required"
        details.append({"code": "InvalidRequestContent", "target": field, "message": f"{field}: {msg}"})
    message = "; ".join(d["message"] for d in details) or "the request body is invalid"
    return JSONResponse(
        status_code=400,
        content=error_body("InvalidRequestContent", message, details[0]["target"] if details else None, details),
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(CorralError)
    async def _corral(_: Request, exc: CorralError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content=error_body(exc.code, exc.message, exc.target))

    @app.exception_handler(RequestValidationError)
    async def _request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def _model(_: Request, exc: ValidationError) -> JSONResponse:
        return validation_response(list(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed", 401: "AuthenticationFailed"}.get(exc.status_code, "Error")
        return JSONResponse(status_code=exc.status_code, content=error_body(code, str(exc.detail)))
