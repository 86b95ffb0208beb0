"""The facade every adapter calls (HTTP API, review UI, CLI, SLA monitor): one object per
database, policy and model, composing the contexts in :mod:`triage.contexts`.

Nothing here decides anything: each method hands over to the context that owns the
capability (``ingestion``, ``cases``, ``labels``, ``alerts``, ``accounts``, ``retraining``,
``audit``), which adapters may also use directly. Every change of label, grade, deadline,
tier and status writes an audit entry in the same transaction as the change, and outbound
webhook events go into the outbox in that same transaction (the dispatcher job sends them
later, so a dead receiver never blocks ingestion).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from triage.clock import utcnow
from triage.contexts.accounts import Accounts
from triage.contexts.alerts import SlaAlerts
from triage.contexts.audit import AuditLog
from triage.contexts.backfill import Backfills
from triage.contexts.cases import Cases
from triage.contexts.core import ServiceCore
from triage.contexts.ingestion import Ingestion
from triage.contexts.labels import LabelChanges
from triage.contexts.retraining import Retraining
from triage.contexts.review import ReviewService
from triage.contexts.surges import Surges
from triage.policy import Policy
from triage.store.database import Database


class TriageService:
    """The product's operations over one database, one policy and the current model."""

    def __init__(
        self,
        db: Database,
        policy: Policy,
        models=None,
        settings=None,
        *,
        now: Callable[[], datetime] = utcnow,
        webhook_urls: Sequence[str] | None = None,
    ):
        from triage.settings import get_settings

        self.core = core = ServiceCore(db, policy, models, settings or get_settings(), now=now,
                                       webhook_urls=webhook_urls)
        self.audit_log = AuditLog(core)
        self.cases = Cases(core, self.audit_log)
        self.labels = LabelChanges(core, self.audit_log, self.cases)
        self.alerts = SlaAlerts(core, self.audit_log, self.cases)
        self.ingestion = Ingestion(core, self.audit_log, self.cases)
        self.accounts = Accounts(core, self.audit_log)
        self.retraining = Retraining(core, self.audit_log)
        self.surges = Surges(core, self.audit_log)
        # The review desk (queue, claims, single and double review, agreement); the
        # ReviewContext of a running server attaches its learning loop to this same object.
        self.review = ReviewService(db, self)
        self.backfills = Backfills(core, self.audit_log, self.ingestion)

        # The operations adapters call, each owned by one context.
        self.ingest = self.ingestion.ingest
        self.ingest_async = self.ingestion.ingest_async
        self.ingest_many = self.ingestion.ingest_many
        self.ingest_connector = self.ingestion.ingest_connector
        self.warm_up = self.ingestion.warm_up
        self.start_coalescing = self.ingestion.start_coalescing
        self.stop_coalescing = self.ingestion.stop_coalescing
        self.get_case = self.cases.get_case
        self.get_message = self.cases.get_message
        self.list_cases = self.cases.list_cases
        self.list_breaches = self.cases.list_breaches
        self.counts = self.cases.counts
        self.followup_stats = self.cases.followup_stats
        self.record_case_event = self.cases.record_event
        self.apply_labels = self.labels.apply
        self.regrade_open_cases = self.labels.regrade_open_cases
        self.list_audit = self.audit_log.list
        self.audit = self.audit_log.record
        self.confirmed_examples = self.retraining.confirmed_examples
        self.message_history = self.retraining.message_history
        self.confirmations_since_retrain = self.retraining.confirmations_since_retrain
        self.claim_retrain = self.retraining.claim_retrain
        self.end_retrain = self.retraining.end_retrain
        self.end_regrade = self.retraining.end_regrade
        self.job_outcome = self.retraining.job_outcome
        self.regrade_missing = self.retraining.regrade_missing
        self.create_user = self.accounts.create_user
        self.list_users = self.accounts.list_users
        self.active_user_role = self.accounts.active_user_role
        self.user_holds_scope = self.accounts.user_holds_scope
        self.set_user_active = self.accounts.set_user_active
        self.create_api_key = self.accounts.create_api_key
        self.list_api_keys = self.accounts.list_api_keys
        self.revoke_api_key = self.accounts.revoke_api_key
        self.authenticate = self.accounts.authenticate
        self.set_password = self.accounts.set_password
        self.password_login = self.accounts.password_login
        self.desk_session = self.accounts.desk_session
        self.logout = self.accounts.logout
        self.set_language = self.accounts.set_language
        self.authenticate_cached = self.accounts.authenticate_cached
        self.scan_surges = self.surges.scan
        self.list_alerts = self.surges.list_alerts
        self.get_alert = self.surges.get_alert
        self.daily_series = self.surges.daily_series
        self.alert_event = self.surges.alert_event
        self.list_incidents = self.surges.list_incidents
        self.get_incident = self.surges.get_incident
        self.update_incident = self.surges.update_incident
        self.review_queue = self.review.queue
        self.review_item = self.review.item
        self.claim_case = self.review.claim
        self.claim_next_case = self.review.claim_next
        self.release_case = self.review.release
        self.decide_review = self.review.decide
        self.review_agreement = self.review.agreement

    @classmethod
    def from_settings(cls, settings, models=None, *, upgrade: bool = True) -> "TriageService":
        db = Database.from_settings(settings)
        if upgrade:
            db.upgrade()
        return cls(db, Policy.from_settings(settings), models, settings)

    # Shared state lives in the core, so a change here is seen by every context.
    db = property(lambda self: self.core.db)
    policy = property(lambda self: self.core.policy)
    settings = property(lambda self: self.core.settings)
    webhook_urls = property(lambda self: self.core.webhook_urls)
    warning_share = property(lambda self: self.core.warning_share)

    @property
    def now(self) -> Callable[[], datetime]:
        return self.core.now

    @now.setter
    def now(self, clock: Callable[[], datetime]) -> None:
        self.core.now = clock

    @property
    def models(self):
        return self.core.models

    @models.setter
    def models(self, holder) -> None:
        self.core.models = holder

    @property
    def triager(self):
        return self.core.models.triager
