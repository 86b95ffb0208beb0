"""HTTP routes of human review and the learning loop, and the review UI mounted at /review.

``install(app)`` is the one line ``api/app.py`` calls. Reviewers need the ``review`` scope,
model changes (retrain, promote, roll back) the ``admin`` scope.
"""

from __future__ import annotations

import threading
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from api.auth import Scoped
from api.errors import AUTHENTICATED, responses
from api.routes import MAX_ID, RowId
from triage.contexts.ingestion import NO_NUL, refuse_nul
from triage.contexts.accounts import Principal
from triage.contexts.review import QueueFilters, ReviewContext

router = APIRouter(prefix="/v1")
_context_lock = threading.Lock()


def review_context(app) -> ReviewContext:
    """The app's ReviewContext, built on first use from ``app.state.service``."""
    context = getattr(app.state, "review_context", None)
    if context is None:
        with _context_lock:
            context = getattr(app.state, "review_context", None)
            if context is None:
                queue = getattr(app.state, "task_queue", None)  # with a broker, a retrain is a worker's task
                context = ReviewContext(app.state.service, settings=app.state.settings,
                                        **({"runner": queue} if getattr(queue, "remote", False) else {}))
                app.state.review_context = context
    return context


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["confirm", "correct", "skip"]
    labels: dict[str, Any] | None = Field(default=None, description="correct: head -> label, e.g. {\"urgency\": 1}")
    note: str | None = Field(default=None, max_length=2000, json_schema_extra={"pattern": NO_NUL})
    expected_version: StrictInt | None = Field(default=None, ge=1, le=MAX_ID,
                                               description="the case version you reviewed (required for confirm/correct)")

    _no_nul = field_validator("note")(classmethod(lambda cls, value: refuse_nul(value)))


class DecisionIn(ReviewIn):
    stage: Literal["first", "second", "adjudication"] | None = Field(
        default=None, description="the review stage you decided (409 if the case is at another one)")


class ClaimNextIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: Literal["any", "first", "second", "adjudication"] = Field(
        default="any", description="any: a second review first, else a first one; adjudication: supervisors")
    order: Literal["deadline", "uncertainty", "learning"] = "deadline"
    exclude: list[Annotated[StrictInt, Field(ge=1, le=MAX_ID)]] = Field(
        default_factory=list, max_length=500, description="case ids to pass over (those you skipped)")


class ModelChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=500, json_schema_extra={"pattern": NO_NUL})

    _no_nul = field_validator("reason")(classmethod(lambda cls, value: refuse_nul(value)))


@router.get("/review/queue", tags=["review"], responses=responses(*AUTHENTICATED), summary="Cases waiting for review, most pressing first")
def get_queue(
    request: Request,
    order: Literal["deadline", "uncertainty", "learning"] = "deadline",
    type_: Literal["quality", "service", "advertising", "refund", "other"] | None = Query(None, alias="type"),
    grade: int | None = Query(None, ge=1, le=3),
    emotion: Literal["calm", "upset", "angry"] | None = None,
    status_: Literal["open", "pending"] | None = Query(None, alias="status"),
    tier: str | None = None,
    breached: bool | None = None,
    stage: Literal["first", "second", "adjudication"] = "first",
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_ID),
    principal: Principal = Scoped("review"),
):
    review = review_context(request.app).review
    filters = QueueFilters(dispute_type=type_, grade=grade, emotion=emotion, status=status_, tier=tier, breached=breached)
    user = principal.user
    return {"total": review.queue_size(filters, reviewer=user, stage=stage),
            "items": review.queue(filters, order, limit, offset, reviewer=user, stage=stage)}


@router.post("/review/claim/next", tags=["review"], responses=responses(*AUTHENTICATED),
             summary="Claim the next case for you (held for TRIAGE_REVIEW_CLAIM_MINUTES); item null when none waits")
def post_claim_next(request: Request, body: ClaimNextIn | None = None, principal: Principal = Scoped("review")):
    body = body or ClaimNextIn()
    item = review_context(request.app).review.claim_next(
        principal.user, QueueFilters(exclude=list(body.exclude)), body.order, body.stage)
    return {"item": item}


@router.get("/review/cases/{case_id}", tags=["review"], responses=responses(*AUTHENTICATED, 404),
            summary="A case as a reviewer sees it: who holds it, its review stage (blind in the second review)")
def get_review_case(request: Request, case_id: RowId, principal: Principal = Scoped("review")):
    return review_context(request.app).review.item(case_id, viewer=principal.user)


@router.post("/review/cases/{case_id}/claim", tags=["review"], responses=responses(*AUTHENTICATED, 404, 409),
             summary="Open a case for review and hold it; 409 if another reviewer holds it or it is final")
def post_claim(request: Request, case_id: RowId, principal: Principal = Scoped("review")):
    return review_context(request.app).review.claim(case_id, principal.user)


@router.delete("/review/cases/{case_id}/claim", tags=["review"], responses=responses(*AUTHENTICATED, 404),
               summary="Give a case you hold back without deciding it")
def delete_claim(request: Request, case_id: RowId, principal: Principal = Scoped("review")):
    review = review_context(request.app).review
    review.item(case_id)  # 404 for an unknown case
    return {"released": review.release(case_id, principal.user)}


@router.post("/review/cases/{case_id}/decision", tags=["review"], responses=responses(*AUTHENTICATED, 404, 409),
             summary="Decide a case at its stage (first, blind second, adjudication); outcome final or awaiting_*")
def post_decision(request: Request, case_id: RowId, body: DecisionIn, principal: Principal = Scoped("review")):
    review = review_context(request.app).review
    return review.decide(case_id, body.action, principal.user, body.expected_version, body.labels, body.note,
                         stage=body.stage)


@router.get("/review/agreement", tags=["review"], responses=responses(*AUTHENTICATED),
            summary="Inter-reviewer agreement and kappa per head, reviewer vs final, throughput, model vs final")
def get_agreement(request: Request, days: int = Query(30, ge=1, le=3660), principal: Principal = Scoped("review")):
    return review_context(request.app).review.agreement(days)


@router.post("/cases/{case_id}/review", tags=["review"], responses=responses(*AUTHENTICATED, 404, 409),
             summary="Confirm, correct or skip a case; 409 if someone else changed it since expected_version")
def post_review(request: Request, case_id: RowId, body: ReviewIn, principal: Principal = Scoped("review")):
    review = review_context(request.app).review
    return review.decide(case_id, body.action, principal.user, body.expected_version, body.labels, body.note)


@router.get("/models", tags=["models"], responses=responses(*AUTHENTICATED), summary="Model versions with metrics and status, and the latest retrain")
def get_models(request: Request, principal: Principal = Scoped("review")):
    return review_context(request.app).models_overview()


@router.post("/models/retrain", tags=["models"], status_code=status.HTTP_202_ACCEPTED,
             responses=responses(*AUTHENTICATED, 409),
             summary="Start a retrain in the background (409 while one runs); poll GET /v1/models")
def post_retrain(request: Request, principal: Principal = Scoped("admin")):
    job = review_context(request.app).learning.start_retrain(f"api:{principal.user}", trigger="api")
    return {"job": job.as_dict()}


def _change_model(request: Request, action: str, version: str, body: ModelChangeIn | None, user: str,
                  default_reason: str) -> dict:
    context = review_context(request.app)
    change = context.learning.promote if action == "promote" else context.learning.rollback
    job = change(version, f"api:{user}", (body.reason if body else None) or default_reason, background=True)
    return {"current": context.store.current_version(), "regrade": job.as_dict()}


@router.post("/models/{version}/promote", tags=["models"], responses=responses(*AUTHENTICATED, 404, 409), summary="Make any saved version current; open cases are re-graded in the background (poll GET /v1/models)")
def post_promote(request: Request, version: str, body: ModelChangeIn | None = None,
                 principal: Principal = Scoped("admin")):
    return _change_model(request, "promote", version, body, principal.user, "promoted through the API")


@router.post("/models/{version}/rollback", tags=["models"], responses=responses(*AUTHENTICATED, 404, 409), summary="Return to an earlier version; open cases are re-graded in the background (poll GET /v1/models)")
def post_rollback(request: Request, version: str, body: ModelChangeIn | None = None,
                  principal: Principal = Scoped("admin")):
    return _change_model(request, "rollback", version, body, principal.user, "rolled back through the API")


def install(app: FastAPI) -> None:
    """Add the review and model routes and mount the review UI at /review."""
    from review_ui.app import mount_review_ui

    app.include_router(router)
    mount_review_ui(app, lambda: review_context(app))
