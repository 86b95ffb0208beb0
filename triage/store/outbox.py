"""The webhook outbox: events are added in the business transaction that causes them, and
:class:`triage.jobs.webhooks.WebhookDispatcher` delivers them later."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from triage.clock import utcnow
from triage.store.tables import WebhookDelivery

EVENTS = ("triaged", "escalated", "warning", "breached", "reviewed", "surge", "reopened")


def enqueue(session: Session, event: str, url: str, payload: dict[str, Any], case_id: int | None = None,
            now: datetime | None = None) -> WebhookDelivery:
    """Add one delivery to the outbox in the caller's transaction."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}; expected one of {EVENTS}")
    now = now or utcnow()
    delivery = WebhookDelivery(event=event, case_id=case_id, url=url, payload=payload, status="pending",
                               attempts=0, next_attempt_at=now, created_at=now)
    session.add(delivery)
    return delivery
