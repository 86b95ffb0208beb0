"""A small typed Python client for the triage HTTP API, for helpdesk teams that prefer code
to curl. Only httpx and pydantic; it never imports the server.

    from triage.client import TriageClient

    with TriageClient("https://triage.example.com", api_key="tri_...") as triage:
        outcome = triage.ingest("mydesk", "T-1001", "声卡插上电脑就冒烟，急！", channel="live_room")
        print(outcome.case.grade, outcome.case.tier, outcome.case.respond_due_at)

Ingestion is idempotent on source + external id, so :meth:`TriageClient.ingest` retries a
503 (database briefly unavailable) or a lost connection by itself. Every other error response
raises :class:`TriageAPIError` with the API's error code, message and offending field.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict

# (method, path) of every route this client calls; tests check them against the app's OpenAPI.
ROUTES = (
    ("post", "/v1/messages"),
    ("get", "/v1/messages/{message_id}"),
    ("get", "/v1/cases"),
    ("get", "/v1/cases/{case_id}"),
    ("post", "/v1/cases/{case_id}/events"),
    ("get", "/v1/review/queue"),
    ("post", "/v1/cases/{case_id}/review"),
    ("get", "/v1/sla/breaches"),
)


class _View(BaseModel):
    model_config = ConfigDict(extra="allow")  # a newer server may add fields


class Case(_View):
    id: int
    message_id: int
    source: str
    external_id: str
    dispute_type: str
    grade: int
    priority_grade: int
    emotion: str
    angry: bool
    escalation: bool
    vulnerable: bool
    labels_source: str
    status: str
    tier: str
    teams: list[str]
    hints: list[str]
    actions: list[str]
    received_at: datetime
    respond_due_at: datetime | None
    resolve_due_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    breached: bool
    model_version: str | None
    confidence: float | None
    product: str | None = None
    batch: str | None = None
    order_id: str | None = None
    owner: str | None = None
    followup_due_at: datetime | None = None
    followed_up_at: datetime | None = None
    satisfaction: int | None = None


class Message(_View):
    id: int
    source: str
    external_id: str
    channel: str | None
    customer_ref: str | None
    text: str  # masked
    received_at: datetime
    case: Case | None


class IngestOutcome(_View):
    index: int = 0
    created: bool = False
    case: Case | None = None
    error: dict[str, Any] | None = None


class BatchOutcome(_View):
    created: int
    existing: int
    errors: int
    results: list[IngestOutcome]


class Breach(_View):
    id: int
    case_id: int
    kind: str
    deadline: str
    due_at: datetime
    occurred_at: datetime


class TriageAPIError(Exception):
    """An error response: ``status_code``, the API's ``error`` code, ``message`` and ``field``."""

    def __init__(self, status_code: int, error: str, message: str, field: str | None = None):
        super().__init__(f"HTTP {status_code} {error}: {message}")
        self.status_code, self.error, self.message, self.field = status_code, error, message, field


CaseEvent = Literal["first_response", "pending", "resumed", "resolved", "closed", "followed_up", "transferred"]


class TriageClient:
    """``base_url`` of the triage API and an API key (scope ``ingest``; ``review`` for
    :meth:`review`). ``http``: an httpx.Client of your own (proxies, TLS, tests)."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0, retries: int = 2,
                 http: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self._own = http is None
        self.http = http or httpx.Client(timeout=timeout)
        self.headers = {"Authorization": f"Bearer {api_key}", "User-Agent": "complaint-triage-client/1"}

    def __enter__(self) -> "TriageClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self.http.close()

    def _call(self, method: str, path: str, *, json: Any = None, params: dict | None = None,
              retry: bool = False) -> Any:
        params = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in (params or {}).items() if v is not None}
        for attempt in range(self.retries + 1 if retry else 1):
            try:
                response = self.http.request(method, self.base_url + path, json=json, params=params, headers=self.headers)
            except httpx.TransportError:
                if attempt == self.retries or not retry:
                    raise
                time.sleep(0.5 * 2 ** attempt)
                continue
            if response.status_code == 503 and retry and attempt < self.retries:
                time.sleep(float(response.headers.get("Retry-After", 0.5 * 2 ** attempt)))
                continue
            if response.status_code >= 400:
                try:
                    body = response.json()
                except ValueError:
                    body = {}
                raise TriageAPIError(response.status_code, body.get("error", "http_error"),
                                     body.get("message", response.text[:200]), body.get("field"))
            return response.json()
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ ingestion

    def ingest(self, source: str, external_id: str, text: str, *, channel: str | None = None,
               customer_ref: str | None = None, received_at: datetime | None = None, product: str | None = None,
               batch: str | None = None, order_id: str | None = None) -> IngestOutcome:
        """One message; ``created`` is False when this source + external id was sent before."""
        body = {"source": source, "external_id": external_id, "text": text, "channel": channel,
                "customer_ref": customer_ref, "received_at": received_at.isoformat() if received_at else None,
                "product": product, "batch": batch, "order_id": order_id}
        return IngestOutcome.model_validate(
            self._call("POST", "/v1/messages", json={k: v for k, v in body.items() if v is not None}, retry=True))

    def ingest_many(self, messages: Sequence[dict[str, Any]]) -> BatchOutcome:
        """Up to 1,000 messages (dicts as for :meth:`ingest`); each succeeds or fails on its own."""
        return BatchOutcome.model_validate(self._call("POST", "/v1/messages", json={"messages": list(messages)},
                                                      retry=True))

    # ------------------------------------------------------------------ reading

    def get_message(self, message_id: int) -> Message:
        return Message.model_validate(self._call("GET", f"/v1/messages/{int(message_id)}"))

    def get_case(self, case_id: int) -> Case:
        return Case.model_validate(self._call("GET", f"/v1/cases/{int(case_id)}"))

    def list_cases(self, *, status: str | None = None, tier: str | None = None, grade: int | None = None,
                   dispute_type: str | None = None, breached: bool | None = None, due_before: datetime | None = None,
                   limit: int = 100, after_id: int = 0) -> tuple[list[Case], int | None]:
        """One page of cases and the ``after_id`` of the next page (None on the last)."""
        body = self._call("GET", "/v1/cases", params={
            "status": status, "tier": tier, "grade": grade, "type": dispute_type,
            "breached": None if breached is None else str(breached).lower(), "due_before": due_before,
            "limit": limit, "after_id": after_id})
        return [Case.model_validate(c) for c in body["cases"]], body["next_after_id"]

    def iter_cases(self, **filters) -> Iterator[Case]:
        """Every matching case, page by page."""
        after_id = filters.pop("after_id", 0)
        while True:
            cases, after_id = self.list_cases(after_id=after_id, **filters)
            yield from cases
            if after_id is None:
                return

    def list_breaches(self, *, since: datetime | None = None, limit: int = 100, after_id: int = 0) -> tuple[list[Breach], int | None]:
        body = self._call("GET", "/v1/sla/breaches", params={"since": since, "limit": limit, "after_id": after_id})
        return [Breach.model_validate(b) for b in body["breaches"]], body["next_after_id"]

    # ------------------------------------------------------------------ changes

    def record_case_event(self, case_id: int, event: CaseEvent, *, at: datetime | None = None,
                          note: str | None = None, agent: str | None = None,
                          satisfaction: int | None = None) -> Case:
        """Tell triage what happened in the helpdesk: first response (by ``agent``, the owner),
        pending, resumed, resolved, closed, followed_up (with ``satisfaction`` 1-5), transferred
        (to ``agent``)."""
        body = {"event": event, "at": at.isoformat() if at else None, "note": note, "agent": agent,
                "satisfaction": satisfaction}
        return Case.model_validate(self._call("POST", f"/v1/cases/{int(case_id)}/events",
                                              json={k: v for k, v in body.items() if v is not None}))

    def review_queue(self, *, limit: int = 50, offset: int = 0, order: str = "deadline") -> tuple[list[dict[str, Any]], int]:
        """Unreviewed open cases (each with ``case_id`` and the ``version`` :meth:`review` needs) and the total."""
        body = self._call("GET", "/v1/review/queue", params={"limit": limit, "offset": offset, "order": order})
        return body["items"], body["total"]

    def review(self, case_id: int, action: Literal["confirm", "correct", "skip"], expected_version: int | None,
               *, labels: dict[str, Any] | None = None, note: str | None = None) -> dict[str, Any]:
        """Confirm, correct or skip a case (a key with scope ``review``); 409 if it changed since."""
        body = {"action": action, "expected_version": expected_version, "labels": labels, "note": note}
        return self._call("POST", f"/v1/cases/{int(case_id)}/review", json={k: v for k, v in body.items() if v is not None})
