"""API-key authentication as a FastAPI dependency with scopes (ingest, review, admin)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from triage.contexts.accounts import Principal


def api_key_from(request: Request) -> str | None:
    """``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key")


def require(*scopes: str) -> Callable[..., Principal]:
    """Dependency: the caller's principal, which must hold one of ``scopes`` (admin holds all)."""

    async def dependency(request: Request) -> Principal:
        service = request.app.state.service
        secret = api_key_from(request)
        principal = service.authenticate_cached(secret) or await run_in_threadpool(service.authenticate, secret)
        principal.require(*scopes)
        return principal

    dependency.__name__ = f"require_{'_or_'.join(scopes)}"
    return dependency


def Scoped(*scopes: str):  # noqa: N802 - reads as a type in signatures
    return Depends(require(*scopes))
