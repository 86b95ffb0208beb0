"""The append-only audit trail: who changed what, before and after, and why.

At the bottom of the contexts: every other context writes to it, in the transaction of the
change it records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from triage.clock import iso
from triage.contexts.core import ServiceCore
from triage.store.tables import AuditEntry

# Fields whose change the audit log records for a case.
AUDITED_CASE_FIELDS = (
    "dispute_type", "grade", "priority_grade", "emotion", "escalation", "vulnerable", "status",
    "tier", "teams", "respond_due_at", "resolve_due_at", "first_response_at", "resolved_at",
    "closed_at", "respond_warned", "resolve_warned", "respond_breached", "resolve_breached", "breach_count",
    "product", "batch", "owner", "followup_due_at", "followed_up_at", "satisfaction", "followup_warned",
    "followup_breached",
)


class AuditView(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    reason: str | None


def case_snapshot(case) -> dict[str, Any]:
    """The audited fields of a case row as plain JSON values."""
    out = {}
    for name in AUDITED_CASE_FIELDS:
        value = getattr(case, name)
        out[name] = iso(value) if isinstance(value, datetime) else (list(value) if isinstance(value, list) else value)
    return out


def diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    changed = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in changed}, {k: after[k] for k in changed}


class AuditLog:
    def __init__(self, core: ServiceCore):
        self.core = core

    def write(self, session: Session, actor: str, action: str, entity: str, entity_id, before=None,
              after=None, reason: str | None = None) -> None:
        """Add one entry in the caller's transaction."""
        session.add(AuditEntry(
            at=self.core.now(), actor=actor, action=action, entity=entity, entity_id=str(entity_id),
            before=before, after=after, reason=reason,
        ))

    def record(self, action: str, actor: str, details: dict[str, Any], entity: str = "system",
               entity_id: str = "-") -> None:
        """Write one audit entry on its own (model promotions, retrains, settings changes)."""
        with self.core.db.session(write=True) as session:
            self.write(session, actor, action, entity, entity_id, after=details)

    def list(self, entity: str | None = None, entity_id: Any = None, limit: int = 1000) -> list[AuditView]:
        query = select(AuditEntry)
        if entity:
            query = query.where(AuditEntry.entity == entity)
        if entity_id is not None:
            query = query.where(AuditEntry.entity_id == str(entity_id))
        with self.core.db.session() as session:
            rows = session.scalars(query.order_by(AuditEntry.id).limit(limit)).all()
            return [AuditView.model_validate(r, from_attributes=True) for r in rows]
