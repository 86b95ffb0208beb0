"""The HTTP routes. Each handler parses, authorises, calls one service function, renders."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from api.auth import Scoped
from api.errors import AUTHENTICATED, responses
from triage.errors import InvalidInput
from triage.contexts.accounts import Principal
from triage.contexts.cases import CASE_EVENTS, CaseFilter, CaseView, MessageView, SlaEventView
from triage.contexts.ingestion import MAX_BATCH, NO_NUL, IngestResult, IsoDateTime, MessageIn

router = APIRouter(prefix="/v1")
READ = ("ingest", "review")
MAX_ID = 2**63 - 1  # ids are 64-bit integers in both databases; larger ones are a 422, not a 500
RowId = Annotated[int, Path(ge=1, le=MAX_ID, description="a row id (64-bit)")]


class MessageBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: list[Any] = Field(min_length=1, max_length=MAX_BATCH,
                                description=f"up to {MAX_BATCH} messages; each succeeds or fails on its own")


class BatchResult(BaseModel):
    created: int
    existing: int
    errors: int
    results: list[IngestResult]


class CaseList(BaseModel):
    cases: list[CaseView]
    next_after_id: int | None = Field(description="pass as after_id for the next page; null on the last page")


class BreachList(BaseModel):
    breaches: list[SlaEventView]
    next_after_id: int | None


class CaseEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["first_response", "pending", "resumed", "resolved", "closed", "followed_up", "transferred"]
    at: IsoDateTime | None = Field(default=None, description="when it happened (with offset); default now")
    note: str | None = Field(default=None, max_length=2000, json_schema_extra={"pattern": NO_NUL})
    agent: str | None = Field(default=None, max_length=200, json_schema_extra={"pattern": NO_NUL},
                              description="first_response: the agent who owns the case (default: the caller); "
                                          "transferred: the new owner")
    satisfaction: int | None = Field(default=None, ge=1, le=5, strict=True,
                                     description="followed_up: the customer's satisfaction, 1-5")


_single_schema = MessageIn.model_json_schema()  # flat: no nested models, so no $refs
_batch_schema = {
    "type": "object", "additionalProperties": False, "required": ["messages"],
    "properties": {"messages": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH,
                                # any item: one that is not a valid message is refused in its own result
                                "items": {"description": "a message as in the single form; an invalid one is "
                                          "refused in its own result while the others are stored"}}},
}
_INGEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [_single_schema, _batch_schema]},
                                         "examples": {
                                             "one": {"value": {"source": "zendesk", "external_id": "T-1001",
                                                               "text": "声卡插上电脑就冒烟，直播马上开始，急！",
                                                               "channel": "live_room"}},
                                             "batch": {"value": {"messages": [
                                                 {"source": "zendesk", "external_id": "T-1002", "text": "补光灯一直闪"}]}},
                                         }}},
    }
}


@router.post(
    "/messages",
    openapi_extra=_INGEST_BODY,
    responses={201: {"model": IngestResult, "description": "a new case"},
               200: {"description": "a retry (the existing case), or a batch (BatchResult)"},
               **responses(*AUTHENTICATED)},
    summary="Push one message or a batch; idempotent on source + external_id",
)
async def post_messages(request: Request, payload: dict[str, Any] = Body(..., include_in_schema=False),
                  principal: Principal = Scoped("ingest")):
    service = request.app.state.service
    metrics = request.app.state.metrics
    if "messages" in payload:
        try:
            batch = MessageBatch.model_validate(payload)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "messages"
            raise InvalidInput(f"{field}: {err['msg']}", field=field) from None
        results = await run_in_threadpool(service.ingest_many, batch.messages, f"api:{principal.user}")
        for r in results:
            if r.created:
                metrics.count_triaged(r.case)
        batch_result = BatchResult(created=sum(r.created for r in results),
                                   existing=sum(1 for r in results if r.case and not r.created),
                                   errors=sum(1 for r in results if r.error), results=results)
        return _json(batch_result, status.HTTP_200_OK)
    result = await service.ingest_async(payload, actor=f"api:{principal.user}")
    if result.created:
        metrics.count_triaged(result.case)
    return _json(result, status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


def _json(model: BaseModel, status_code: int) -> Response:
    """Serialise with pydantic directly: the hot path skips FastAPI's generic encoder."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


@router.get("/messages/{message_id}", response_model=MessageView, responses=responses(*AUTHENTICATED, 404), summary="A message with its case and prediction")
def get_message(request: Request, message_id: RowId, principal: Principal = Scoped(*READ)):
    return request.app.state.service.get_message(message_id)


@router.get("/cases", response_model=CaseList, responses=responses(*AUTHENTICATED), summary="Cases matching every given filter, oldest first")
def list_cases(
    request: Request,
    status_: Literal["open", "pending", "resolved", "closed"] | None = Query(None, alias="status"),
    tier: str | None = None,
    grade: int | None = Query(None, ge=1, le=3),
    type_: Literal["quality", "service", "advertising", "refund", "other"] | None = Query(None, alias="type"),
    breached: bool | None = None,
    due_before: IsoDateTime | None = Query(None, description="an open deadline falls before this moment"),
    limit: int = Query(100, ge=1, le=1000),
    after_id: int = Query(0, ge=0, le=MAX_ID),
    principal: Principal = Scoped(*READ),
):
    filters = CaseFilter(status=status_, tier=tier, grade=grade, dispute_type=type_, breached=breached,
                         due_before=due_before, limit=limit, after_id=after_id)
    cases = request.app.state.service.list_cases(filters)
    return CaseList(cases=cases, next_after_id=cases[-1].id if len(cases) == limit else None)


@router.get("/cases/{case_id}", response_model=CaseView, responses=responses(*AUTHENTICATED, 404), summary="One case")
def get_case(request: Request, case_id: RowId, principal: Principal = Scoped(*READ)):
    return request.app.state.service.get_case(case_id)


@router.post("/cases/{case_id}/events", response_model=CaseView, responses=responses(*AUTHENTICATED, 404, 409),
             summary=f"Record a helpdesk event: {', '.join(CASE_EVENTS)}")
def post_case_event(request: Request, case_id: RowId, body: CaseEventIn, principal: Principal = Scoped(*READ)):
    return request.app.state.service.record_case_event(case_id, body.event, actor=f"api:{principal.user}",
                                                       at=body.at, note=body.note, agent=body.agent,
                                                       satisfaction=body.satisfaction)


@router.get("/sla/breaches", response_model=BreachList, responses=responses(*AUTHENTICATED), summary="SLA breaches, oldest first")
def list_breaches(
    request: Request,
    since: IsoDateTime | None = Query(None, description="only breaches whose deadline passed at or after this"),
    limit: int = Query(100, ge=1, le=1000),
    after_id: int = Query(0, ge=0, le=MAX_ID),
    principal: Principal = Scoped(*READ),
):
    rows = request.app.state.service.list_breaches(since=since, limit=limit, after_id=after_id)
    return BreachList(breaches=rows, next_after_id=rows[-1].id if len(rows) == limit else None)
