"""Background work behind one interface (:mod:`.runner`): the SLA monitor
(:mod:`.sla_monitor`) and webhook delivery (:mod:`.webhooks`); the retrain job of
:mod:`models.learning` runs on the same runner."""
