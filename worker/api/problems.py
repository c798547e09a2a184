"""Errors as problem details (RFC 9457, application/problem+json): one status and one type
per error class of core.domain.errors, the API's own 401, FastAPI's validation errors and
Starlette's routing errors; anything else is a 500 without a traceback (logged here)."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from core.domain import errors

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
#: Problem types are URNs: the product never points outside its repository.
TYPE_PREFIX = "urn:orch:problem:"

#: (error class, status, type slug, title), most specific first.
STATUSES: list[tuple[type[Exception], int, str, str]] = [
    (errors.Unavailable, 503, "unavailable", "Service unavailable"),
    (errors.Backpressure, 429, "backpressure", "Backlog limit reached"),
    (errors.IdempotencyConflict, 409, "conflict", "Conflict"),
    (errors.InvalidTransition, 409, "invalid-transition", "Not allowed in this state"),
    (errors.Forbidden, 403, "forbidden", "Forbidden"),
    (errors.NotFound, 404, "not-found", "Not found"),
    (errors.ReasonRequired, 400, "reason-required", "A reason is required"),
    (errors.InvalidInput, 400, "invalid-input", "Invalid input"),
    (errors.OrchError, 400, "error", "Request failed"),
]
_BY_STATUS = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    409: ("conflict", "Conflict"),
    415: ("unsupported-media-type", "Unsupported media type"),
    422: ("validation", "Validation failed"),
    500: ("internal", "Internal error"),
    503: ("unavailable", "Service unavailable"),
}


class Unauthorized(Exception):
    """No bearer token, or one that authenticates nobody (401, WWW-Authenticate: Bearer)."""


class Problem(BaseModel):
    """An RFC 9457 problem detail."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="A URN naming the kind of problem, e.g. urn:orch:problem:not-found")
    title: str
    status: int
    detail: str
    instance: str | None = Field(default=None, description="The request's path")
    errors: list[dict[str, Any]] | None = Field(default=None, description="Validation errors (422 only)")


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of these error statuses (problem+json)."""
    return {
        status: {"model": Problem, "description": _BY_STATUS[status][1], "content": {MEDIA_TYPE: {}}}
        for status in statuses
    }


def problem(
    request: Request,
    status: int,
    detail: str,
    *,
    slug: str | None = None,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    default_slug, default_title = _BY_STATUS.get(status, ("error", "Error"))
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + (slug or default_slug),
        "title": title or default_title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _orch_error(request: Request, exc: Exception) -> JSONResponse:
    status, slug, title = next((s, t, ti) for cls, s, t, ti in STATUSES if isinstance(exc, cls))
    return problem(request, status, str(exc), slug=slug, title=title)


def _unauthorized(request: Request, exc: Exception) -> JSONResponse:
    return problem(request, 401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="orch"'})


def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    found = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in found) or "the request is not valid"
    return problem(request, 422, detail, errors=found)


def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _BY_STATUS.get(exc.status_code, ("", "Error"))[1]
    return problem(request, exc.status_code, detail, headers=dict(exc.headers or {}) or None)


def _database(request: Request, exc: Exception) -> JSONResponse:
    log.warning("api: the ledger is unavailable: %s", str(exc).splitlines()[0])
    return problem(request, 503, "the ledger is unavailable; try again shortly")


def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error("api: %s %s failed", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "the request failed inside Orch; the server's log has the details")


def install(app: FastAPI) -> None:
    """Every error the app can meet, answered as problem+json."""
    app.add_exception_handler(errors.OrchError, _orch_error)
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(sa.exc.OperationalError, _database)
    app.add_exception_handler(Exception, _internal)
