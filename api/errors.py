"""The one place where domain errors become HTTP responses.

Every error body has the same shape: ``{"error": code, "message": text, "field": name|null,
"detail": [...]}``; 422 bodies name the offending field, 401 carries ``WWW-Authenticate``,
503 carries ``Retry-After`` (the request is safe to retry: ingestion is idempotent).
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from triage.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    ModelError,
    NotFound,
    PolicyError,
    TriageError,
    Unauthorized,
    Unavailable,
)

log = logging.getLogger(__name__)

# (status, error code) per domain error; the first matching class in this order wins.
STATUS_BY_ERROR: list[tuple[type[Exception], int, str]] = [
    (InvalidInput, 422, "invalid_input"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (Unauthorized, 401, "unauthorized"),
    (Forbidden, 403, "forbidden"),
    (Unavailable, 503, "unavailable"),
    (ModelError, 503, "model_unavailable"),
    (PolicyError, 500, "policy_error"),
    (TriageError, 400, "bad_request"),
]


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error response: a code, a sentence, the offending field (422) and the details."""

    error: str
    message: str
    field: str | None
    detail: list[ErrorDetail]


_MEANING = {400: "malformed request", 401: "missing or unknown API key", 403: "the key lacks the scope",
            404: "no such resource", 405: "method not allowed", 409: "conflicts with the resource's current state",
            422: "invalid input; `field` names it", 503: "database or model unavailable; retry (Retry-After)"}
AUTHENTICATED = (401, 403, 422, 503)


def responses(*statuses: int) -> dict[int, dict]:
    """OpenAPI ``responses`` for the error statuses a route returns, all with :class:`ErrorBody`."""
    return {status: {"model": ErrorBody, "description": _MEANING[status]} for status in statuses}


def error_body(code: str, message: str, field: str | None = None, detail: list | None = None) -> dict:
    return {"error": code, "message": message, "field": field, "detail": detail or []}


def _domain_response(exc: TriageError) -> JSONResponse:
    status, code = next((status, code) for cls, status, code in STATUS_BY_ERROR if isinstance(exc, cls))
    field = getattr(exc, "field", None)
    detail = [{"loc": ["body", *field.split(".")] if field else ["body"], "msg": str(exc), "type": code}] if status == 422 else []
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="triage"'
    if status == 503:
        headers["Retry-After"] = "5"
    return JSONResponse(error_body(code, str(exc), field, detail), status_code=status, headers=headers)


def unreadable_body(exc: BaseException | None) -> str | None:
    """What makes a request body unreadable as JSON, in words; None if ``exc`` is not that."""
    if isinstance(exc, UnicodeDecodeError):
        return f"request body is not valid UTF-8: byte 0x{exc.object[exc.start]:02x} at position {exc.start}"
    if isinstance(exc, RecursionError):
        return "request body is nested too deeply to parse"
    if isinstance(exc, ValueError):  # json.JSONDecodeError and other decoding errors
        return f"request body is not valid JSON: {exc}"
    return None


def parse_json_body(body: bytes):
    """``body`` as JSON, or :class:`InvalidInput` (422, field ``body``) naming the problem."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(unreadable_body(exc), field="body") from None


def _field_of(loc) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    @app.exception_handler(TriageError)
    async def on_domain_error(request: Request, exc: TriageError):
        return _domain_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            message = f"request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
            field = "body"
        else:
            message = f"{field}: {first.get('msg')}"
        return JSONResponse(error_body("invalid_input", message, field, detail), status_code=422)

    @app.exception_handler(sa_exc.OperationalError)
    @app.exception_handler(sa_exc.InterfaceError)
    async def on_database_down(request: Request, exc: Exception):
        log.warning("database unavailable: %s", exc)
        return _domain_response(Unavailable("database unavailable; retry later"))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException):
        problem = unreadable_body(exc.__cause__) if exc.status_code == 400 else None
        if problem:  # FastAPI's "error parsing the body": say which problem, as every 422 does
            return _domain_response(InvalidInput(problem, field="body"))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
