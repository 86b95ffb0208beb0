"""HTTP routes of early warning: surge alerts and the recall incidents opened from them.

``install(app)`` is the one line ``api/app.py`` calls. Reading needs the ``ingest`` or
``review`` scope, handling an alert or an incident the ``review`` scope.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Scoped
from api.errors import AUTHENTICATED, responses
from api.routes import MAX_ID, RowId
from triage.contexts.ingestion import NO_NUL, IsoDateTime
from triage.contexts.accounts import Principal
from triage.contexts.surges import ALERT_EVENTS, AlertView, DailySeries, IncidentView

router = APIRouter(prefix="/v1", tags=["early warning"])
READ = ("ingest", "review")


class AlertList(BaseModel):
    alerts: list[AlertView]
    next_after_id: int | None


class IncidentList(BaseModel):
    incidents: list[IncidentView]
    next_after_id: int | None


class AlertEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Literal["acknowledge", "dismiss", "open_recall"]
    reason: str | None = Field(default=None, max_length=2000, description="required to dismiss",
                               json_schema_extra={"pattern": NO_NUL})
    owner: str | None = Field(default=None, max_length=200, json_schema_extra={"pattern": NO_NUL},
                              description="open_recall: the incident's owner (default: the policy's recall owner)")


class IncidentUpdateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str | None = Field(default=None, max_length=200, json_schema_extra={"pattern": NO_NUL})
    status: Literal["open", "recalling", "no_recall", "closed"] | None = None
    note: str | None = Field(default=None, max_length=2000, json_schema_extra={"pattern": NO_NUL})


@router.get("/alerts", response_model=AlertList, responses=responses(*AUTHENTICATED), summary="Surge alerts, oldest first")
def list_alerts(
    request: Request,
    status_: Literal["open", "acknowledged", "dismissed", "recall"] | None = Query(None, alias="status"),
    product: str | None = Query(None, max_length=200, pattern=NO_NUL, description="SKU, name or alias"),
    since: IsoDateTime | None = Query(None, description="alerts whose latest case was received at or after this"),
    limit: int = Query(100, ge=1, le=1000),
    after_id: int = Query(0, ge=0, le=MAX_ID),
    principal: Principal = Scoped(*READ),
):
    rows = request.app.state.service.list_alerts(status=status_, product=product, since=since, limit=limit,
                                                 after_id=after_id)
    return AlertList(alerts=rows, next_after_id=rows[-1].id if len(rows) == limit else None)


@router.get("/alerts/{alert_id}", response_model=AlertView, responses=responses(*AUTHENTICATED, 404),
            summary="One surge alert")
def get_alert(request: Request, alert_id: RowId, principal: Principal = Scoped(*READ)):
    return request.app.state.service.get_alert(alert_id)


@router.get("/products/{product}/daily", response_model=DailySeries, responses=responses(*AUTHENTICATED),
            summary="Daily complaints about one product, with its alerts (the dashboard's chart)")
def product_daily(
    request: Request,
    product: str = Path(..., min_length=1, max_length=200, pattern=NO_NUL, description="SKU, name or alias"),
    days: int = Query(30, ge=1, le=366, description="calendar days in the policy's timezone"),
    until: IsoDateTime | None = Query(None, description="the last day is the one holding this moment (default now)"),
    principal: Principal = Scoped(*READ),
):
    return request.app.state.service.daily_series(product, days=days, until=until)


@router.post("/alerts/{alert_id}/events", response_model=AlertView, responses=responses(*AUTHENTICATED, 404, 409),
             summary=f"Handle a surge alert: {', '.join(ALERT_EVENTS)}")
def post_alert_event(request: Request, alert_id: RowId, body: AlertEventIn, principal: Principal = Scoped("review")):
    return request.app.state.service.alert_event(alert_id, body.event, actor=f"api:{principal.user}",
                                                 reason=body.reason, owner=body.owner)


@router.get("/incidents", response_model=IncidentList, responses=responses(*AUTHENTICATED), summary="Recall incidents, oldest first")
def list_incidents(
    request: Request,
    status_: Literal["open", "recalling", "no_recall", "closed"] | None = Query(None, alias="status"),
    limit: int = Query(100, ge=1, le=1000),
    after_id: int = Query(0, ge=0, le=MAX_ID),
    principal: Principal = Scoped(*READ),
):
    rows = request.app.state.service.list_incidents(status=status_, limit=limit, after_id=after_id)
    return IncidentList(incidents=rows, next_after_id=rows[-1].id if len(rows) == limit else None)


@router.get("/incidents/{incident_id}", response_model=IncidentView, responses=responses(*AUTHENTICATED, 404),
            summary="One recall incident")
def get_incident(request: Request, incident_id: RowId, principal: Principal = Scoped(*READ)):
    return request.app.state.service.get_incident(incident_id)


@router.patch("/incidents/{incident_id}", response_model=IncidentView, responses=responses(*AUTHENTICATED, 404, 409),
              summary="Change a recall incident's owner, status or note (audited)")
def patch_incident(request: Request, incident_id: RowId, body: IncidentUpdateIn, principal: Principal = Scoped("review")):
    return request.app.state.service.update_incident(incident_id, actor=f"api:{principal.user}", owner=body.owner,
                                                     status=body.status, note=body.note)


def install(app: FastAPI) -> None:
    app.include_router(router)
