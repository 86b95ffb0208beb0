"""Helpdesk connector routes: Chatwoot's and Zammad's own signed webhooks, and a declarative
field map for any other helpdesk. Each parses, verifies, maps (``triage.connectors``) and
calls the service once; a delivery that is not a customer's message is answered 200 with
the reason and stores nothing."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.auth import Scoped
from api.errors import ErrorBody, parse_json_body, responses
from triage.connectors import Ignored, Mapped, from_chatwoot, from_field_map, from_zammad, verify_chatwoot, verify_zammad
from triage.errors import NotFound
from triage.contexts.accounts import Principal
from triage.contexts.cases import CaseView

router = APIRouter(prefix="/v1/connectors", tags=["connectors"])


class ConnectorResult(BaseModel):
    created: bool = False
    case: CaseView | None = None
    ignored: str | None = Field(default=None, description="why nothing was stored (not a customer's message)")


_RESPONSES = {201: {"model": ConnectorResult, "description": "a new case"},
              200: {"model": ConnectorResult, "description": "a replay (the existing case) or an ignored delivery"},
              **responses(404, 422, 503),
              401: {"model": ErrorBody, "description": "missing, wrong or stale signature; nothing stored"}}


def _payload(body: bytes) -> Any:
    return parse_json_body(body)


def _enabled(request: Request, connector: str):
    settings = request.app.state.service.settings
    if not getattr(settings, f"{connector}_enabled"):
        raise NotFound(f"the {connector} connector is not enabled (TRIAGE_{connector.upper()}_ENABLED)")
    return settings


async def _ingest(request: Request, outcome: Mapped | Ignored, actor: str) -> Response:
    if isinstance(outcome, Ignored):
        result = ConnectorResult(ignored=outcome.reason)
        return Response(result.model_dump_json(), status_code=200, media_type="application/json")
    service = request.app.state.service
    ingested = await run_in_threadpool(service.ingest_connector, outcome.message, outcome.thread, outcome.refs, actor)
    if ingested.created:
        request.app.state.metrics.count_triaged(ingested.case)
    result = ConnectorResult(created=ingested.created, case=ingested.case)
    return Response(result.model_dump_json(), status_code=201 if ingested.created else 200,
                    media_type="application/json")


@router.post("/chatwoot", responses=_RESPONSES,
             summary="Chatwoot's message_created webhook (X-Chatwoot-Signature); customers' incoming messages only")
async def post_chatwoot(request: Request):
    settings = _enabled(request, "chatwoot")
    body = await request.body()
    verify_chatwoot(settings.chatwoot_webhook_secret, body, request.headers.get("x-chatwoot-signature"),
                    request.headers.get("x-chatwoot-timestamp"), settings.chatwoot_max_skew_s)
    return await _ingest(request, from_chatwoot(_payload(body)), "connector:chatwoot")


@router.post("/zammad", responses=_RESPONSES,
             summary="Zammad's trigger webhook (X-Hub-Signature); customers' articles only")
async def post_zammad(request: Request):
    settings = _enabled(request, "zammad")
    body = await request.body()
    verify_zammad(settings.zammad_webhook_secret, body, request.headers.get("x-hub-signature"))
    return await _ingest(request, from_zammad(_payload(body)), "connector:zammad")


@router.post("/generic/{source}", responses={**_RESPONSES, **responses(401, 403)},
             summary="Any helpdesk's webhook through its field map (TRIAGE_CONNECTOR_MAPS); API key with ingest scope")
async def post_generic(request: Request, source: str, principal: Principal = Scoped("ingest")):
    fields = request.app.state.service.settings.connector_maps.get(source)
    if fields is None:
        raise NotFound(f"no field map for source {source!r} (TRIAGE_CONNECTOR_MAPS)")
    payload = _payload(await request.body())
    return await _ingest(request, from_field_map(source, fields, payload), f"api:{principal.user}")
