"""What every context of one service shares: the database, the policy, the settings, the
model holder, the clock and the webhook receivers.

One mutable object, so that a change made through the facade (a test's clock, the learning
loop's model holder) is seen by every context at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from triage.catalogue import Catalogue
from triage.clock import utcnow
from triage.errors import InvalidInput, ModelError
from triage.policy import Policy
from triage.store.database import Database


class StaticModels:
    """Adapts a bare Triager to the ``.triager`` / ``.loaded`` shape of models.learning.ModelHolder."""

    def __init__(self, triager):
        self._triager = triager

    @property
    def triager(self):
        if self._triager is None:
            raise ModelError("no model is loaded; train one with `triage ensure-model`")
        return self._triager

    @property
    def loaded(self) -> bool:
        return self._triager is not None

    def swap(self, triager) -> None:
        self._triager = triager


class ServiceCore:
    def __init__(self, db: Database, policy: Policy, models, settings, *, now: Callable[[], datetime] = utcnow,
                 webhook_urls: Sequence[str] | None = None):
        self.db = db
        self.policy = policy
        self.settings = settings
        # models: a models.learning.ModelHolder (``.triager``, ``.loaded``) or a bare Triager.
        self.models = models if hasattr(models, "loaded") else StaticModels(models)
        self.now = now
        if webhook_urls is None:
            raw = settings.webhook_url or ""
            webhook_urls = [u.strip() for u in raw.split(",") if u.strip()]
        self.webhook_urls = list(webhook_urls)
        self.catalogue = Catalogue.load(settings.catalogue_path or settings.datasets_dir / "catalogue.csv")
        self.warning_share = float(settings.sla_warning_share)
        if not 0 < self.warning_share < 1:
            raise InvalidInput(f"TRIAGE_SLA_WARNING_SHARE must be between 0 and 1, got {self.warning_share}")
