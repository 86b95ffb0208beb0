"""Persistence: the tables (:mod:`.tables`), the database and its migrations
(:mod:`.database`, ``migrations/``), bulk queries (:mod:`.queries`) and the webhook outbox
(:mod:`.outbox`). Only the contexts, the jobs and the adapters' wiring import this package;
the domain never does."""

from triage.store.database import Database
from triage.store.tables import (
    ApiKey,
    AuditEntry,
    Base,
    Case,
    ConnectorRef,
    DoubleReview,
    LoginAttempt,
    Message,
    Prediction,
    RecallIncident,
    ReviewClaim,
    ReviewDecision,
    SlaEvent,
    SurgeAlert,
    SurgeAlertCase,
    UiSession,
    User,
    WebhookAttempt,
    WebhookDelivery,
    utcnow,
)

__all__ = [
    "ApiKey", "AuditEntry", "Base", "Case", "ConnectorRef", "Database", "DoubleReview", "LoginAttempt", "Message", "Prediction",
    "RecallIncident", "ReviewClaim", "ReviewDecision", "UiSession",
    "SlaEvent", "SurgeAlert", "SurgeAlertCase", "User", "WebhookAttempt", "WebhookDelivery", "utcnow",
]
